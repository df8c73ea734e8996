import { afterAll, beforeAll } from 'vitest';
import { startClientFleet, type ClientFleet } from '../../bench/live-fleet.js';
import { standIn } from './harness.js';

/**
 * A fleet of SSH clients in a process of their own (bench/live-fleet.ts) for the file or describe:
 * started before its later hooks and, before their clean-up (vitest runs afterAll hooks in reverse),
 * told to stop typing, its clients closed and its process stopped.
 */
export function useClientFleet(): ClientFleet {
  let fleet: ClientFleet | undefined;
  beforeAll(async () => {
    fleet = await startClientFleet();
  });
  afterAll(async () => {
    await fleet?.typeStop().catch(() => undefined);
    await fleet?.close().catch(() => undefined);
    await fleet?.stop();
  });
  return standIn(() => fleet, 'the client fleet');
}
