/** Moved to proxy/harness/child.ts (shared by tests and benchmarks); this re-export stays until every branch imports from there. */
export * from '../../harness/child.ts';
