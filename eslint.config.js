// Lint configuration (ESLint flat config). Type-aware rules from typescript-eslint run over everything
// tsconfig.json includes, through the TypeScript project service, so eslint sees the same types as tsc.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // Build output, coverage, caches and generated or data JSON.
    ignores: ['node_modules/', 'dist/', 'coverage/', '.tap/', '.cache/', 'bench-results/', '**/*.json'],
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        // The two JavaScript files (this one and the bin shim) are outside tsconfig.json.
        projectService: { allowDefaultProject: ['eslint.config.js', 'proxy/bin/*.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      // A leading underscore marks a parameter kept for the signature (callbacks, symmetric transitions).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    // Plain Node.js scripts outside tsconfig.json: Node's globals.
    files: ['eslint.config.js', 'proxy/bin/*.js'],
    languageOptions: { globals: { URL: 'readonly', console: 'readonly', process: 'readonly' } },
  },
  {
    files: ['proxy/test/**/*.test.ts'],
    rules: {
      // tap queues `t.test(...)` subtests itself and reports their failures; the promise it returns is
      // only for callers that want to wait. Every other promise in a test must still be awaited or handled.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }] },
      ],
      // tap ends a subtest when the promise of an async callback settles; a synchronous callback must call
      // t.end() instead. `async (t) => { ... }` without an await is the idiom that needs no t.end().
      '@typescript-eslint/require-await': 'off',
    },
  },
);
