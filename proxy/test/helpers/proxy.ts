/** Moved to proxy/harness/proxy.ts (shared by tests and benchmarks). */
export * from '../../harness/proxy.ts';
