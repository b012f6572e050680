import { protocol } from 'electron'
import { readAsset, SECURITY_HEADERS } from '../web/static'

/** The scheme the renderer is served from: a standard, secure origin of its own. */
export const APP_SCHEME = 'addcow'
/** The renderer's origin; the IPC trusts main frames of this origin only. */
export const APP_ORIGIN = `${APP_SCHEME}://app`
/** The page the main window loads. */
export const APP_URL = `${APP_ORIGIN}/index.html`

/** Declare the app's scheme as standard and secure. Must run before the app is ready. */
export function registerAppScheme(): void {
  protocol.registerSchemesAsPrivileged([
    {
      scheme: APP_SCHEME,
      privileges: { standard: true, secure: true, supportFetchAPI: true, codeCache: true },
    },
  ])
}

/**
 * Serve the built renderer under {@link APP_ORIGIN}, with the same CSP and security headers as
 * the browser mode. Nothing outside `root` is reachable.
 */
export function serveRenderer(root: string): void {
  protocol.handle(APP_SCHEME, async (request) => {
    const url = new URL(request.url)
    const asset =
      url.host === 'app' && request.method === 'GET' ? await readAsset(root, url.pathname) : null
    if (!asset) {
      return new Response('Not found.', {
        status: 404,
        headers: { ...SECURITY_HEADERS, 'Content-Type': 'text/plain' },
      })
    }
    return new Response(new Uint8Array(asset.body), {
      status: 200,
      headers: {
        ...SECURITY_HEADERS,
        'Content-Type': asset.contentType,
        'Cache-Control': 'no-cache',
      },
    })
  })
}
