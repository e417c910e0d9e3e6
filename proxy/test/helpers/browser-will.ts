/** Moved to proxy/harness/browser-will.ts (shared by tests and benchmarks). */
export * from '../../harness/browser-will.ts';
