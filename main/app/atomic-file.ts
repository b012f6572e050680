import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/**
 * Replace `path` with `text` atomically: write a temporary file beside it, fsync it, rename it
 * over the old one, fsync the folder. A crash at any point leaves the old file or the new one,
 * never a half-written file (at worst a stray temporary file, removed on failure).
 */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const folder = dirname(path)
  await mkdir(folder, { recursive: true })
  const temporary = join(
    folder,
    `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  )
  try {
    const handle = await open(temporary, 'wx', 0o600)
    try {
      await handle.writeFile(text)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temporary, path)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  const directory = await open(folder, 'r').catch(() => null)
  if (directory) {
    await directory.sync().catch(() => undefined)
    await directory.close()
  }
}

/** Read and parse a JSON file; null when it is missing or not valid JSON. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    return null
  }
  try {
    return JSON.parse(text) as unknown
  } catch {
    return null
  }
}
