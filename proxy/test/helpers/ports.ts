/** Moved to proxy/harness/ports.ts (shared by tests and benchmarks). */
export * from '../../harness/ports.ts';
