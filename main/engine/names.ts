import { stat } from 'node:fs/promises'
import { dirname, isAbsolute, normalize, relative, resolve, sep } from 'node:path'
import type { NameResolution, NameVerdictReason } from '../../shared/image-types'
import { bounded, EngineError, quote } from './errors'
import { realPath } from './fs'

/**
 * Decides which names stored in images the engine may follow (DESIGN.md, "Security rules").
 *
 * Names inside images are untrusted: a downloaded overlay can name /etc/shadow as its base. A
 * name is followed only if it is relative and stays inside the naming file's folder, if the
 * (naming file, target) pair is trusted in the library, or if the user allowed it for this run.
 * Protocol and `json:` names, devices and non-regular files are refused whatever the policy.
 */
export interface NamePolicy {
  /** Follow every name that is not always-refused (the CLI's --allow-any-name). */
  readonly allowAny: boolean
  /** Absolute paths the user allowed for this run (--allow-name). */
  readonly allowedPaths: ReadonlySet<string>
  /** Whether the library records `namingFile` → `target` (both real paths) as trusted. */
  isTrustedPair(namingFile: string, target: string): boolean
}

/** A policy that follows only names inside the naming file's folder. */
export const STRICT_POLICY: NamePolicy = {
  allowAny: false,
  allowedPaths: new Set(),
  isTrustedPair: () => false,
}

/** Build a policy from explicit options, optionally consulting a trust list. */
export function makePolicy(options: {
  allowAny?: boolean
  allowedPaths?: Iterable<string>
  isTrustedPair?: (namingFile: string, target: string) => boolean
}): NamePolicy {
  return {
    allowAny: options.allowAny ?? false,
    allowedPaths: new Set([...(options.allowedPaths ?? [])].map((path) => resolve(path))),
    isTrustedPair: options.isTrustedPair ?? (() => false),
  }
}

const PROTOCOL = /^[A-Za-z][A-Za-z0-9+.-]*:/
const WINDOWS_DRIVE = /^[A-Za-z]:[\\/]/

/** Resolve a stored name against the folder of the file that stores it. */
export function resolveName(namingFile: string, stored: string): string {
  return isAbsolute(stored) ? normalize(stored) : resolve(dirname(resolve(namingFile)), stored)
}

function isInside(folder: string, target: string): boolean {
  const rel = relative(folder, target)
  return rel !== '' && !rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel)
}

/**
 * Judge a stored name: where it resolves and whether the policy lets the engine follow it.
 * Never throws for a bad name; the verdict says why it is refused.
 */
export async function judgeName(
  namingFile: string,
  stored: string,
  format: string | null,
  policy: NamePolicy,
): Promise<NameResolution & { realPath: string }> {
  const verdict = (
    reason: NameVerdictReason,
    resolved: string,
    realPath = resolved,
  ): NameResolution & { realPath: string } => ({
    stored,
    resolved,
    format,
    followed:
      reason === 'inside-folder' || reason === 'trusted-in-library' || reason === 'allowed-by-user',
    reason,
    realPath,
  })
  if (stored.startsWith('json:')) return verdict('json', stored)
  if (PROTOCOL.test(stored) && !WINDOWS_DRIVE.test(stored)) return verdict('protocol', stored)
  if (stored.includes('\0')) return verdict('protocol', stored)
  const resolved = resolveName(namingFile, stored)
  const folder = dirname(resolve(namingFile))
  const nameInside = !isAbsolute(stored) && isInside(folder, resolved)
  // The three lookups are independent: asked at once, they cost one wait, not three (each is a
  // thread-pool round trip, and a network file system's round trip on top). The real paths
  // are only used once the file is known to be a regular file.
  const [info, real, realFolder] = await Promise.all([
    stat(resolved).catch(() => null),
    realPath(resolved),
    nameInside ? realPath(folder) : null,
  ])
  if (!info) return verdict('missing', resolved)
  if (info.isBlockDevice() || info.isCharacterDevice()) return verdict('device', resolved)
  if (!info.isFile()) return verdict('not-regular-file', resolved)
  if (realFolder !== null && isInside(realFolder, real))
    return verdict('inside-folder', resolved, real)
  if (policy.allowAny || policy.allowedPaths.has(resolved) || policy.allowedPaths.has(real)) {
    return verdict('allowed-by-user', resolved, real)
  }
  if (policy.isTrustedPair(await realPath(resolve(namingFile)), real)) {
    return verdict('trusted-in-library', resolved, real)
  }
  return verdict('outside-folder', resolved, real)
}

const REFUSAL_TEXT: Record<NameVerdictReason, string> = {
  'inside-folder': '',
  'trusted-in-library': '',
  'allowed-by-user': '',
  'outside-folder':
    'it lies outside the folder of the file that names it and is not trusted in the library; pass --allow-name with that path (or approve it in the app) if you trust this image',
  protocol: 'protocol names are never followed',
  json: 'json: names are never followed',
  device: 'device nodes are never followed',
  'not-regular-file': 'it is not a regular file',
  missing: 'the file does not exist',
  loop: 'it would make the chain loop',
  self: 'it is the file that names it',
  'same-file': 'it is the same file as another layer of the chain (its base)',
}

/** A verdict as images report it: without the real path, which is only for loop checks. */
export function withoutRealPath(verdict: NameResolution & { realPath?: string }): NameResolution {
  const { realPath: _realPath, ...resolution } = verdict
  void _realPath
  return resolution
}

/** Throw the error that explains why `verdict` may not be followed (no-op if it may). */
export function assertFollowable(
  namingFile: string,
  role: 'backing file' | 'image file',
  verdict: NameResolution,
): void {
  if (verdict.followed) return
  const code =
    verdict.reason === 'missing'
      ? 'MISSING_FILE'
      : verdict.reason === 'outside-folder'
        ? 'UNTRUSTED_NAME'
        : 'REFUSED_NAME'
  throw new EngineError(
    code,
    `Refusing to open the ${role} ${quote(verdict.stored)} (${bounded(verdict.resolved)}) named by ${namingFile}: ${REFUSAL_TEXT[verdict.reason]}.`,
    { path: namingFile, field: role, value: verdict.stored },
  )
}
