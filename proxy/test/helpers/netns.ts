/** Moved to proxy/harness/netns.ts (shared by tests and benchmarks); this re-export stays until every branch imports from there. */
export * from '../../harness/netns.ts';
