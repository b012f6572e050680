/**
 * QEMU integration: command lines for the three ways to run an overlay, discovery of installed
 * emulators, the accelerator probe, a QMP client and the launcher (README.md in this folder).
 */
export * from './accelerator'
export * from './binaries'
export * from './command'
export * from './launcher'
export * from './qmp'
