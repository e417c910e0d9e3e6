/**
 * The test process itself: uncaught exceptions and rejections collected for an
 * assertion, and heap numbers after a real gc().
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { sleep } from './clients.ts';

/**
 * Every uncaught exception and unhandled rejection from now until the test's
 * teardown, so a test can assert there were none instead of crashing.
 */
export function collectUncaught(t: { teardown(fn: () => void): void }): unknown[] {
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => { uncaught.push(err); };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  t.teardown(() => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });
  return uncaught;
}

// A real gc() for before/after numbers, whether or not node was started with --expose-gc.
v8.setFlagsFromString('--expose-gc');
const gc = (global.gc ?? vm.runInNewContext('gc')) as () => void;

/** process.memoryUsage() after three rounds of gc() 50 ms apart. */
export async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(50);
  }
  return process.memoryUsage();
}
