// Replays every recorded session history (test/replay/histories) against the current workflow code.
// A change to sessionWorkflow that would break a session already running on the old code (live
// sessions last up to 7 days, across deploys) fails here, naming the fixture. See
// docs/workflow-versioning.md for what to do about it, and test/replay/histories/README.md for the
// fixtures and how to record new ones.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, type ReplayResult } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../lib/log.js';
import { routeTemporalLogs } from '../lib/temporal.js';
import { workflowBundle } from './support/harness.js';
import { historyFromJSON } from './replay/history-json.js';

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'replay', 'histories');
/** `<version>-<path>[-run<N>].json`; the manifests (`<version>.manifest.json`) say where each came from. */
const FIXTURE = /^v\d+-[a-z0-9-]+\.json$/;
const MANIFEST = /^v\d+\.manifest\.json$/;

const files = readdirSync(DIR);
const fixtures = files.filter((f) => FIXTURE.test(f)).sort();
/** fixture file → the workflow id it was recorded under (histories do not carry it; replay is given it). */
const workflowIds = new Map<string, string>(
  files
    .filter((f) => MANIFEST.test(f))
    .flatMap((f) => (JSON.parse(readFileSync(path.join(DIR, f), 'utf8')) as { recordings: { fixtures: { file: string; workflow_id: string }[] }[] }).recordings)
    .flatMap((r) => r.fixtures.map((x) => [x.file, x.workflow_id] as const)),
);

const results = new Map<string, ReplayResult | Error>();

beforeAll(async () => {
  // The replay worker's own log lines at warn and above only (before the SDK's runtime starts).
  routeTemporalLogs(createLogger('warn'));
  const histories = fixtures.map((file) => {
    try {
      return { file, history: historyFromJSON(JSON.parse(readFileSync(path.join(DIR, file), 'utf8'))) };
    } catch (err) {
      results.set(file, new Error(`could not load ${file}: ${(err as Error).message}`));
      return null;
    }
  }).filter((h) => h !== null);
  // One replay worker for all of them, on the bundle of the current workflow code (test/support/global-setup.ts).
  const replay = Worker.runReplayHistories(
    { workflowBundle: workflowBundle(), replayName: 'essh-replay' },
    histories.map((h) => ({ workflowId: workflowIds.get(h.file) ?? 'ssh-session-0', history: h.history })),
  );
  let i = 0;
  for await (const result of replay) results.set(histories[i++]!.file, result);
}, 120_000);

describe('recorded session histories replay on the current workflow code', () => {
  it('there are fixtures, each listed in a manifest', () => {
    expect(fixtures.length).toBeGreaterThan(0);
    expect(fixtures.filter((f) => !workflowIds.has(f)), 'fixtures missing from every vN.manifest.json').toEqual([]);
    expect([...workflowIds.keys()].filter((f) => !fixtures.includes(f)), 'manifest entries without a fixture file').toEqual([]);
  });

  it.each(fixtures)('%s', (file) => {
    const r = results.get(file);
    if (r === undefined) throw new Error(`${file} was not replayed (the replay stopped before it)`);
    if (r instanceof Error) throw r;
    if (r.error) {
      throw new Error(
        `${file} no longer replays on the current sessionWorkflow: ${r.error.name}: ${r.error.message}\n` +
          'A session recorded on the old code would fail the same way after a deploy. Put the change behind ' +
          'patched() (docs/workflow-versioning.md) rather than editing or deleting the fixture.',
        { cause: r.error },
      );
    }
  });
});
