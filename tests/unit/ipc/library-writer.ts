import { Library } from '../../../main/engine/library'

// A separate process that adds images to a library file, one update at a time, to race with
// other writers (handlers/library.test.ts). Arguments: LIBRARY_FILE PREFIX COUNT.
const [file, prefix, count] = process.argv.slice(2)
if (!file || !prefix || !count)
  throw new Error('usage: library-writer.ts LIBRARY_FILE PREFIX COUNT')
const library = new Library(file)
for (let index = 0; index < Number(count); index++) {
  await library.addImages([`/images/${prefix}-${index}.raw`])
}
