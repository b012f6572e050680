import { readFile, stat } from 'node:fs/promises'
import { extname, normalize, resolve, sep } from 'node:path'

/**
 * The Content-Security-Policy of the renderer, the same in the Electron app (sent by its
 * protocol handler) and in the browser mode (sent by the web server).
 *
 * Scripts only from the app itself, no eval, no plugins, no framing, no forms, no base
 * rewriting, network only to the app's own origin (the WebSocket in the browser mode).
 * Styles allow 'unsafe-inline' because the component library injects its styles at run time.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "object-src 'none'",
].join('; ')

/** Headers sent with every response of the renderer, in both shells. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), usb=(), serial=(), hid=()',
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
}

/** The Content-Type for a file name. */
export function contentTypeOf(path: string): string {
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream'
}

/** A file of the built renderer, ready to send. */
export interface Asset {
  path: string
  body: Buffer
  contentType: string
}

/**
 * Find the file a URL path names inside `root` (the built renderer). Returns null for a path
 * that escapes the root, is not a file, or cannot be decoded. `/` is index.html, and a path
 * without an extension that names nothing is index.html too (the app's own routes).
 */
export async function readAsset(root: string, urlPath: string): Promise<Asset | null> {
  let decoded: string
  try {
    decoded = decodeURIComponent(urlPath)
  } catch {
    return null
  }
  if (decoded.includes('\0')) return null
  const base = resolve(root)
  const relative = normalize(decoded).replace(/^[/\\]+/, '')
  const full = resolve(base, relative === '' ? 'index.html' : relative)
  if (full !== base && !full.startsWith(base + sep)) return null
  const candidates = extname(full) === '' ? [full, resolve(base, 'index.html')] : [full]
  for (const candidate of candidates) {
    const info = await stat(candidate).catch(() => null)
    if (info?.isFile()) {
      return {
        path: candidate,
        body: await readFile(candidate),
        contentType: contentTypeOf(candidate),
      }
    }
  }
  return null
}
