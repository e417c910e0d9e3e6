/** Moved to proxy/harness/ws-bridge.ts (shared by tests and benchmarks). */
export * from '../../harness/ws-bridge.ts';
