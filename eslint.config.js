// Lint: typescript-eslint + eslint-plugin-vue, and the layering of DESIGN.md enforced with
// import-x/no-restricted-paths: shared imports nothing of ours; the engine, nbd, qemu and cli
// never import electron, ipc, app or renderer code; the renderer never imports main or Node.
import js from '@eslint/js'
import prettier from 'eslint-config-prettier'
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript'
import importX from 'eslint-plugin-import-x'
import vue from 'eslint-plugin-vue'
import globals from 'globals'
import tseslint from 'typescript-eslint'

const NODE_AREAS = ['main/engine', 'main/nbd', 'main/qemu', 'main/cli']

export default tseslint.config(
  {
    ignores: [
      'out/**',
      'dist/**',
      'node_modules/**',
      'test-results/**',
      'playwright-report/**',
      'docs/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  ...vue.configs['flat/recommended'],
  {
    files: ['**/*.vue'],
    languageOptions: { parserOptions: { parser: tseslint.parser } },
  },
  {
    languageOptions: { globals: { ...globals.node } },
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [
        createTypeScriptImportResolver({
          project: ['tsconfig.node.json', 'tsconfig.web.json', 'tsconfig.shared.json'],
          noWarnOnMultipleProjects: true,
        }),
      ],
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: [
            {
              target: './shared',
              from: ['./main', './renderer'],
              message: 'shared/ imports nothing of ours.',
            },
            ...NODE_AREAS.map((target) => ({
              target: `./${target}`,
              // `addcow web` (main/cli/commands/web.ts) starts the browser mode, so the CLI alone
              // may import main/web (which brings the IPC handlers); never app or renderer.
              from:
                target === 'main/cli'
                  ? ['./main/app', './main/ipc', './renderer']
                  : ['./main/app', './main/ipc', './main/web', './renderer'],
              message:
                'engine, nbd, qemu and cli are pure Node: no app, ipc, web or renderer code.',
            })),
            {
              target: './main/ipc',
              from: ['./main/app', './main/web', './renderer', './main/cli'],
              message: 'ipc sits below app and web.',
            },
            {
              target: './main/web',
              from: ['./main/app', './renderer'],
              message: 'web is the browser-mode twin of app.',
            },
            {
              target: './main/engine',
              from: ['./main/nbd', './main/qemu', './main/cli'],
              message: 'The engine is the bottom layer.',
            },
            {
              target: './renderer',
              from: ['./main'],
              message: 'The renderer talks to main over IPC only.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['shared/**/*.ts', ...NODE_AREAS.map((area) => `${area}/**/*.ts`), 'main/web/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'electron',
              message: 'Only main/app, main/ipc bindings and the preload import electron.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['renderer/**/*.{ts,vue}'],
    languageOptions: { globals: { ...globals.browser } },
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['node:*', 'electron', 'fs', 'path', 'child_process'],
              message: 'The renderer has no Node or Electron.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['shared/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['node:*', 'electron'], message: 'shared/ is runtime-neutral.' }] },
      ],
    },
  },
  // Formatting is Prettier's job: turn off the stylistic rules that fight it (in .vue too).
  prettier,
)
