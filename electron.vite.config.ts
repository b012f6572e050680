import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'electron-vite'
import { resolve } from 'node:path'

// electron-vite builds the three parts of the desktop app into out/:
// - main: the Electron composition root (ES module, dependencies left external);
// - preload: one CommonJS file that requires nothing but 'electron', as a sandboxed preload
//   must (no chunks, no node_modules: it bundles only the import-free channel list);
// - renderer: the Vue app, also served by `addcow web` in the browser mode.
const root = import.meta.dirname

export default defineConfig({
  main: {
    build: {
      outDir: resolve(root, 'out/main'),
      emptyOutDir: true,
      sourcemap: true,
      rolldownOptions: { input: { index: resolve(root, 'main/app/index.ts') } },
    },
  },
  preload: {
    build: {
      outDir: resolve(root, 'out/preload'),
      emptyOutDir: true,
      externalizeDeps: false,
      isolatedEntries: true,
      rolldownOptions: {
        input: { preload: resolve(root, 'main/app/preload.ts') },
        output: { format: 'cjs', entryFileNames: '[name].cjs' },
      },
    },
  },
  renderer: {
    root: resolve(root, 'renderer'),
    base: './',
    plugins: [vue()],
    build: {
      outDir: resolve(root, 'out/renderer'),
      emptyOutDir: true,
      sourcemap: true,
      rolldownOptions: { input: resolve(root, 'renderer/index.html') },
    },
  },
})
