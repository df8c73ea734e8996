import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { EarlyPortalConnection, openPortalShell, waitForShellOutput, type PortalAddress, type PortalTarget } from '../cli/portal-client.js';
import { DEMO_IMAGE, DEMO_PROMPT as PROMPT } from '../server/seed.js';
import { apiOk, endSession } from './api-client.js';
import { chainEvents, mapLimit } from './histories.js';
import { programExitedSignal, sessionWorkflowId } from '../shapes/session-workflow.js';
import { percentile } from './stats.js';
import type { BenchContext, BenchModule, BenchRow } from './types.js';

const RUNS = Number(process.env.ESSH_BENCH_PROMPT_RUNS ?? 20);
const WARMUP = 1;
const RUN_TIMEOUT_MS = 60_000;
// The command as the README puts it on PATH (a shell launcher that runs bin/essh.js with node).
const ESSH_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'essh');
/** What `essh ssh` prints on stderr once the container is ready; the container's output follows it. */
const ESSH_READY = /ready in [\d.]+ s\r?\n/;

/** essh's own progress lines: the POST answered, and the container ready. */
const ESSH_CREATED = /Provisioning container for session \d+/;

interface PromptSample {
  /** Process started → first byte of the container's own output. */
  firstByteMs: number;
  /** Process started → the prompt complete on the terminal. */
  promptMs: number;
  /** For `essh ssh`: process started → its "Provisioning…" line (POST answered) and → "ready in". */
  createdMs?: number;
  readyMs?: number;
  /** In-process runs: POST answered, portal's key checked (waiting for credentials), token accepted, channel open. */
  postMs?: number;
  handshakeMs?: number;
  authenticatedMs?: number;
  channelMs?: number;
  /** In-process runs: whether the shell opened on the connection made before the POST answered. */
  usedEarly?: boolean;
}

/** The figures of a PromptSample that are times. */
type PromptTiming = Exclude<keyof PromptSample, 'usedEarly'>;

/**
 * Runs `command` in a real terminal (util-linux `script` gives it a pty), times its first output byte
 * and its prompt, then types `exit` and waits for it to end. `containerOutputAfter`: output before this
 * marker is the client's own (essh's progress line), not the container's.
 */
function promptInTerminal(command: string, env: NodeJS.ProcessEnv, containerOutputAfter?: RegExp) {
  return new Promise<PromptSample & { transcript: string }>((resolve, reject) => {
    const started = performance.now();
    const child = spawn('script', ['-qfec', command, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let text = '';
    let firstByteMs = 0;
    let promptMs = 0;
    let createdMs: number | undefined;
    let readyMs: number | undefined;
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command}: no prompt within ${RUN_TIMEOUT_MS} ms; output so far: ${JSON.stringify(text.slice(-300))} ${stderr}`));
    }, RUN_TIMEOUT_MS);
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.stdout.on('data', (c: Buffer) => {
      const now = performance.now() - started;
      text += c.toString('latin1');
      let own = text;
      if (containerOutputAfter) {
        if (createdMs === undefined && ESSH_CREATED.test(text)) createdMs = now;
        const m = containerOutputAfter.exec(text);
        if (!m) return;
        readyMs ??= now;
        own = text.slice(m.index + m[0].length);
      }
      if (!firstByteMs && own.length > 0) firstByteMs = now;
      if (!promptMs && PROMPT.test(own)) {
        promptMs = now;
        child.stdin.write('exit\r');
      }
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (!promptMs) return reject(new Error(`${command} exited (${code}) before its prompt; output: ${JSON.stringify(text.slice(-300))} ${stderr}`));
      resolve({ firstByteMs, promptMs, createdMs, readyMs, transcript: text });
    });
  });
}

/** How long the CLI process takes to start and exit doing nothing (node, the bundle, commander). */
function cliStartup(): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(ESSH_BIN, ['--version'], { stdio: 'ignore' });
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`essh --version exited ${code}`))));
  });
}

/** A command run to its exit without a terminal (`essh ssh APP -- true`, `docker run --rm IMAGE true`). */
function timeToExit(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(file, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${file} ${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

/**
 * The same path without the CLI process: POST, then the portal with ssh2 in this process. With
 * `remembered` (the portal of an earlier answer), its connection and key exchange start with the POST,
 * as `essh ssh` does when it remembers the portal (cli/portal-memory.ts); without, they start once
 * the POST has answered, as on a first use.
 */
export async function promptInProcess(ctx: BenchContext, app: string, token: string, remembered: PortalAddress | null = null): Promise<PromptSample & { id: number; connect: PortalTarget }> {
  const started = performance.now();
  const early = remembered ? new EarlyPortalConnection(remembered) : null;
  const created = await apiOk<{ id: number; connect: PortalTarget }>(ctx, 'POST', `/apps/${app}/sessions`, token, {}).catch((err: Error) => {
    early?.close();
    throw err;
  });
  const postMs = performance.now() - started;
  const shell = await openPortalShell(created.connect, { pty: { rows: 24, cols: 80, term: 'xterm' }, early });
  try {
    const before = performance.now() - started;
    const seen = await waitForShellOutput(shell, PROMPT, RUN_TIMEOUT_MS).catch((err: Error) => {
      throw new Error(`session ${created.id}: ${err.message}`);
    });
    shell.channel.write('exit\r');
    await Promise.race([shell.exitCode, sleep(10_000)]);
    return {
      id: created.id, connect: created.connect, firstByteMs: before + seen.firstByteMs, promptMs: before + seen.matchedMs, postMs,
      handshakeMs: (shell.phases.handshake ?? NaN) - started, authenticatedMs: (shell.phases.authenticated ?? NaN) - started, channelMs: before,
      usedEarly: shell.phases.early,
    };
  } finally {
    shell.close();
    await endSession(ctx, created.id, token);
  }
}

async function lastOperationId(ctx: BenchContext): Promise<number> {
  const row = await ctx.runtime.db.selectFrom('operations').select((eb) => eb.fn.max('id').as('id')).executeTakeFirst();
  return Number(row?.id ?? 0);
}

/**
 * For each `-- true` session since `afterId`, from its history: the programExited signal → the
 * completion of the activity that recorded `ending` (the first one scheduled after the signal).
 */
async function programExitToEnding(ctx: BenchContext, afterId: number): Promise<number[]> {
  const rows = await ctx.runtime.db.selectFrom('operations').select('id').where('id', '>', afterId).where('command', '=', JSON.stringify(['true'])).execute();
  const at = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) => (t ? Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6 : NaN);
  const spans = await mapLimit(rows, 4, async ({ id }) => {
    const { events } = await chainEvents(ctx.runtime.client, sessionWorkflowId(id));
    const signal = events.findIndex((e) => e.workflowExecutionSignaledEventAttributes?.signalName === programExitedSignal.name);
    if (signal < 0) return NaN;
    const scheduled = events.slice(signal).find((e) => e.activityTaskScheduledEventAttributes);
    const completed = scheduled && events.find((e) => e.activityTaskCompletedEventAttributes?.scheduledEventId?.toString() === scheduled.eventId?.toString());
    return completed ? at(completed.eventTime) - at(events[signal]!.eventTime) : NaN;
  });
  return spans.filter((x) => Number.isFinite(x));
}

/** Waits until the app's warm pool has `n` running containers again (it refills after each take). */
async function poolReady(ctx: BenchContext, app: string, n: number, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pool = await ctx.docker.listContainers({ filters: { label: [`essh.app=${app}`, 'essh.pool=true'], status: ['running'] } });
    if (pool.filter((c) => c.Names.some((x) => x.includes('-pool-'))).length >= n) return;
    if (Date.now() > deadline) throw new Error(`the warm pool of ${app} did not refill to ${n} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

export const portalPrompt: BenchModule = {
  name: 'portal-prompt',
  description: '`essh ssh APP` started → first prompt, with a warm pool and without, with the portal remembered from the last run and on a first use, beside `docker run --rm -it` of the same image (all under `script`)',
  async run(ctx) {
    const warm = await ctx.createTenant({ maxConcurrentSessions: 5, warmPool: 2 });
    const cold = await ctx.createTenant({ maxConcurrentSessions: 5 });
    // The CLI's config directory holds what it remembers of the portal (portals.json beside the login):
    // one kept across the runs (the portal remembered, as for anyone's second `essh ssh`), and a new
    // empty one per run for a first use (nothing remembered: the connection starts once the POST answers).
    const configs = await mkdtemp(path.join(os.tmpdir(), 'essh-bench-prompt-'));
    const remembering = path.join(configs, 'remembering', 'essh.json');
    let firstUses = 0;
    const firstUse = () => path.join(configs, `first-use-${++firstUses}`, 'essh.json');
    const envFor = (token: string, configFile: string) => ({
      ...process.env, TERM: 'xterm', ESSH_API_URL: ctx.apiUrl, ESSH_TOKEN: token, ESSH_CONFIG: configFile,
    });
    const docker: PromptSample[] = [];
    const warmCli: PromptSample[] = [];
    const warmCliFirstUse: PromptSample[] = [];
    const coldCli: PromptSample[] = [];
    const inProcess: PromptSample[] = [];
    const inProcessEarly: PromptSample[] = [];
    const esshTrue: number[] = [];
    const esshTrueFirstUse: number[] = [];
    const dockerTrue: number[] = [];
    const sessions = new Map<number, string>();
    const viaCli = async (tenant: { app: string; token: string }, configFile: string) => {
      const c = await promptInTerminal(`${ESSH_BIN} ssh ${tenant.app}`, envFor(tenant.token, configFile), ESSH_READY);
      const id = Number(/session (\d+)/.exec(c.transcript)?.[1]);
      if (id) {
        sessions.set(id, tenant.token);
        await endSession(ctx, id, tenant.token);
        sessions.delete(id);
      }
      return c;
    };
    /** The portal of the last in-process answer, for the in-process runs that start their connection early. */
    let lastPortal: PortalAddress | null = null;
    const inProcessRun = async (early: boolean) => {
      await poolReady(ctx, warm.app, 2);
      const p = await promptInProcess(ctx, warm.app, warm.token, early ? lastPortal : null);
      if (p.connect.host_key) lastPortal = { host: p.connect.host, port: p.connect.port, host_key: p.connect.host_key };
      return p;
    };
    const firstId = await lastOperationId(ctx);
    try {
      await poolReady(ctx, warm.app, 2, 60_000);
      // Interleaved, so that all of them see the same machine load; which of the two ways goes first
      // alternates, so that neither always follows the same thing.
      for (let i = 0; i < WARMUP + RUNS; i++) {
        const d = await promptInTerminal(`docker run --rm -it ${DEMO_IMAGE} /bin/sh -l`, { ...process.env, TERM: 'xterm' });
        const both = async <T>(remembered: () => Promise<T>, first: () => Promise<T>): Promise<[T, T]> => {
          if (i % 2) {
            const f = await first();
            return [await remembered(), f];
          }
          const r = await remembered();
          return [r, await first()];
        };
        const [w, wf] = await both(
          async () => (await poolReady(ctx, warm.app, 2), viaCli(warm, remembering)),
          async () => (await poolReady(ctx, warm.app, 2), viaCli(warm, firstUse())),
        );
        const c = await viaCli(cold, remembering);
        const [pe, p] = await both(() => inProcessRun(true), () => inProcessRun(false));
        const dt = await timeToExit('docker', ['run', '--rm', DEMO_IMAGE, 'true'], process.env);
        // Their sessions end by themselves (the program exited): nothing to terminate.
        const [et, etf] = await both(
          async () => (await poolReady(ctx, warm.app, 2), timeToExit(ESSH_BIN, ['ssh', '-T', warm.app, '--', 'true'], envFor(warm.token, remembering))),
          async () => (await poolReady(ctx, warm.app, 2), timeToExit(ESSH_BIN, ['ssh', '-T', warm.app, '--', 'true'], envFor(warm.token, firstUse()))),
        );
        if (i < WARMUP) continue;
        dockerTrue.push(dt);
        esshTrue.push(et);
        esshTrueFirstUse.push(etf);
        docker.push(d);
        warmCli.push(w);
        warmCliFirstUse.push(wf);
        coldCli.push(c);
        inProcess.push(p);
        inProcessEarly.push(pe);
        ctx.progress(`portal-prompt ${i - WARMUP + 1}/${RUNS}: essh ssh warm ${w.promptMs.toFixed(0)} ms (first use ${wf.promptMs.toFixed(0)} ms), pool empty ${c.promptMs.toFixed(0)} ms, in-process ${pe.promptMs.toFixed(0)} ms (first use ${p.promptMs.toFixed(0)} ms), docker run ${d.promptMs.toFixed(0)} ms`);
      }
    } finally {
      await Promise.all([...sessions].map(([id, token]) => endSession(ctx, id, token).catch(() => undefined)));
      await rm(configs, { recursive: true, force: true });
    }
    const untilEnding = await programExitToEnding(ctx, firstId);
    const startup: number[] = [];
    for (let i = 0; i < 5; i++) startup.push(await cliStartup());
    const rows: BenchRow[] = [];
    const add = (metric: string, sample: PromptSample[], key: PromptTiming, note?: string) => {
      for (const p of [50, 95]) {
        rows.push({ benchmark: 'portal-prompt', metric: `${metric} p${p}`, value: percentile(sample.map((s) => s[key] ?? NaN), p), unit: 'ms', note: p === 50 ? note : undefined });
      }
    };
    const ratio = (sample: PromptSample[], q: number) => percentile(sample.map((s) => s.promptMs), q) / percentile(docker.map((s) => s.promptMs), q);
    const verdict = (value: number, target: number) => `target <= ${target} (issue 20) ${value <= target ? 'met' : 'NOT met'}`;
    add('essh ssh → prompt, warm pool', warmCli, 'promptMs', `real CLI (bin/essh, as on PATH) under script, ${RUNS} runs; the portal remembered from the run before`);
    add('essh ssh → prompt, warm pool, first use', warmCliFirstUse, 'promptMs', 'the same with nothing remembered (a new config directory per run): the connection starts once the POST answers');
    add('essh ssh → prompt, pool empty', coldCli, 'promptMs', 'the portal remembered');
    add('docker run -it → prompt', docker, 'promptMs', 'baseline, same image, under script');
    const w50 = ratio(warmCli, 50);
    const wf50 = ratio(warmCliFirstUse, 50);
    const c50 = ratio(coldCli, 50);
    rows.push({ benchmark: 'portal-prompt', metric: 'ratio p50 essh ssh (warm pool) / docker run', value: w50, unit: 'x', note: verdict(w50, 0.6) });
    rows.push({ benchmark: 'portal-prompt', metric: 'ratio p95 essh ssh (warm pool) / docker run', value: ratio(warmCli, 95), unit: 'x' });
    rows.push({ benchmark: 'portal-prompt', metric: 'ratio p50 essh ssh (warm pool, first use) / docker run', value: wf50, unit: 'x', note: verdict(wf50, 0.6) });
    rows.push({ benchmark: 'portal-prompt', metric: 'ratio p50 essh ssh (pool empty) / docker run', value: c50, unit: 'x', note: verdict(c50, 1.3) });
    add('phase: essh ssh → POST answered (warm)', warmCli, 'createdMs', 'CLI start-up + POST (its "Provisioning…" line)');
    add('phase: essh ssh → "ready in" (warm)', warmCli, 'readyMs');
    add('phase: essh ssh → "ready in" (warm, first use)', warmCliFirstUse, 'readyMs');
    for (const q of [50, 95]) {
      const e = percentile(esshTrue, q);
      const ef = percentile(esshTrueFirstUse, q);
      const d = percentile(dockerTrue, q);
      rows.push(
        { benchmark: 'portal-prompt', metric: `essh ssh -T APP -- true → exit p${q} (warm)`, value: e, unit: 'ms', note: q === 50 ? 'no terminal; the CLI as on PATH (bin/essh); the portal remembered' : undefined },
        { benchmark: 'portal-prompt', metric: `essh ssh -T APP -- true → exit p${q} (warm, first use)`, value: ef, unit: 'ms', note: q === 50 ? 'nothing remembered' : undefined },
        { benchmark: 'portal-prompt', metric: `docker run --rm IMAGE true → exit p${q}`, value: d, unit: 'ms', note: q === 50 ? 'baseline, same image' : undefined },
        { benchmark: 'portal-prompt', metric: `ratio p${q} essh ssh -- true / docker run true`, value: e / d, unit: 'x', note: q === 50 ? verdict(e / d, 0.6) : undefined },
        { benchmark: 'portal-prompt', metric: `ratio p${q} essh ssh -- true, first use / docker run true`, value: ef / d, unit: 'x' },
      );
    }
    for (const q of [50, 95]) {
      rows.push({
        benchmark: 'portal-prompt', metric: `phase p${q}: -- true, programExited signal → \`ending\` recorded`, value: percentile(untilEnding, q), unit: 'ms',
        note: q === 50 ? `server event times, ${untilEnding.length} sessions: what the exit status waits for after the program (CONTRACT §8)` : undefined,
      });
    }
    // Where the early connection's time goes, from an already running process (no CLI start-up), each
    // phase from the start of the POST.
    const phases: [string, PromptTiming][] = [
      ['POST answered', 'postMs'], ['portal key checked, waiting for credentials', 'handshakeMs'], ['token accepted', 'authenticatedMs'],
      ['channel open', 'channelMs'], ['prompt', 'promptMs'],
    ];
    for (const [label, key] of phases) {
      const early = percentile(inProcessEarly.map((s) => s[key] ?? NaN), 50);
      const late = percentile(inProcess.map((s) => s[key] ?? NaN), 50);
      rows.push(
        { benchmark: 'portal-prompt', metric: `in-process phase p50: ${label}, portal remembered`, value: early, unit: 'ms', note: label === 'POST answered' ? 'API POST + ssh2 in the bench process; connection and key exchange started with the POST' : undefined },
        { benchmark: 'portal-prompt', metric: `in-process phase p50: ${label}, first use`, value: late, unit: 'ms', note: label === 'POST answered' ? 'connection started once the POST answered' : undefined },
      );
    }
    const pe50 = percentile(inProcessEarly.map((s) => s.promptMs), 50);
    const p50 = percentile(inProcess.map((s) => s.promptMs), 50);
    rows.push({ benchmark: 'portal-prompt', metric: 'ratio p50 in-process prompt, portal remembered / first use', value: pe50 / p50, unit: 'x' });
    rows.push({ benchmark: 'portal-prompt', metric: 'in-process runs on the early connection', value: inProcessEarly.filter((s) => s.usedEarly).length, unit: 'runs', note: `of ${RUNS}; the others fell back to a connection made after the answer` });
    rows.push({ benchmark: 'portal-prompt', metric: 'essh --version process p50', value: percentile(startup, 50), unit: 'ms', note: 'CLI start-up alone (bin/essh: node + the esbuild bundle), 5 runs' });
    return rows;
  },
};
