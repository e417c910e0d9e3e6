/** Moved to proxy/harness/mosquitto.ts (shared by tests and benchmarks). */
export * from '../../harness/mosquitto.ts';
