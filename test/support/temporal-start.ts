import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Starts a Temporal server through `@temporalio/testing`, which gives it 5 s to answer: a machine busy
 * compiling native modules (the first `npm ci` of a Node 24 run) or running three test files at once
 * can miss that (the dev server once three times in 30 s, the time-skipping server once in a full run),
 * so a start that timed out is tried again, five times over about a minute.
 */
export async function startTemporalServer<T>(start: () => Promise<T>, what: string): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt === 5 || !/did not start within/.test((err as Error).message)) throw err;
      console.error(`${what} did not answer within the SDK's 5 s (attempt ${attempt} of 5); starting it again`);
      await sleep(2000 * 2 ** (attempt - 1));
    }
  }
}
