import type { ImageSummary } from '../../../../shared/ipc/contract'

// Data the renderer's tests share: library summaries as main sends them.

export const KIB = 1024
export const MIB = 1024 * KIB

/** A library summary of an add-cow image of 16 MiB with no base, changed by `overrides`. */
export function summary(path: string, overrides: Partial<ImageSummary> = {}): ImageSummary {
  return {
    path,
    name: path.split('/').pop() ?? path,
    addedAt: '2025-01-01T00:00:00.000Z',
    format: 'add-cow',
    virtualSize: 16 * MIB,
    diskUsage: 0,
    files: [],
    clusterSize: 64 * KIB,
    allocatedPercent: 0,
    base: { status: 'none', stored: null, path: null, reason: null },
    chainLength: 1,
    dependents: [],
    loop: null,
    error: null,
    ...overrides,
  }
}
