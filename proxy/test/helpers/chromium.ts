/** Moved to proxy/harness/chromium.ts (shared by tests and benchmarks). */
export * from '../../harness/chromium.ts';
