import type { FormatDescription } from '../../disk'

/** Raw, as the driver table knows it before loading the driver: never probed, the fallback. */
export const RAW_FORMAT: FormatDescription = {
  name: 'raw',
  probe: () => 0,
  fallback: true,
}
