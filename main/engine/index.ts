/**
 * The add-cow engine's public surface: formats, chains and operations, in pure Node.
 * Nothing here may import electron, IPC or renderer code (lint enforces it).
 */
export * from './disk'
export * from './errors'
export * from './names'
export * from './open'
export * from './registry'
export * from './library'
export * from './units'
export { AddCowDisk } from './formats/add-cow/add-cow-disk'
export { RawDisk } from './formats/raw/raw'
export * from './ops/create'
export * from './ops/info'
export * from './ops/map'
export * from './ops/compare'
