// The SSH clients of the live-sessions benchmark and of test/scale-live-sessions.test.ts, in a process
// of their own (node --import tsx bench/live-clients.ts, started by bench/live-fleet.ts): each holds one
// ssh2 connection with a PTY shell open on its session through the portal, as a user's terminal would,
// so that the runtime under test pays for the portal's side only. Driven over the IPC channel. A client
// given its session owner's key comes back by itself when its connection is lost (the portal's process
// killed), as `ssh -p PORT session-<id>@HOST` with that key would.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { PortalRefusedError, openPortalShell, type PortalShell, type PortalTarget } from '../cli/portal-client.js';
import { DEMO_PROMPT as PROMPT } from '../server/seed.js';
import type { FleetReply, FleetRequest } from './live-fleet.js';

interface Held {
  shell: PortalShell;
  /** The last of what the portal wrote on stderr (an end notice says why). */
  stderr: string;
  /** The connection itself went (the portal's process killed, say), not just the channel. */
  lost: boolean;
  /** Everything the program's output brought this connection (up to SEEN_MAX bytes), for comparing with its journal. */
  seen: Buffer[];
  seenBytes: number;
}

const SEEN_MAX = 4 << 20;

/** How to come back after a lost connection: the owner's key, and for how long to keep trying. */
interface Reattach {
  privateKey: string;
  withinMs: number;
}

interface Client {
  id: number;
  connect: PortalTarget;
  pty: { rows: number; cols: number };
  reattach?: Reattach;
  /** Where it connects from, when it has an address of its own. */
  localAddress?: string;
  held?: Held;
  /** The parent asked to close it (also while it is reattaching). */
  closing: boolean;
}

/** From the shell channel opening to the program's prompt: the container's provisioning, a `docker exec`, a shell starting. */
const PROMPT_WITHIN_MS = 120_000;

const clients = new Map<number, Client>();
let attachedSoFar = 0;

/** To the parent, while it listens (a parent that left is no error of ours). */
const send = (m: FleetReply) => {
  if (process.connected) process.send?.(m, undefined, undefined, () => undefined);
};

/**
 * With SPREAD, each client to a loopback portal connects from an address of its own in 127.0.0.0/8, as
 * clients on many machines would: the portal's guard counts connections still authenticating per
 * address (10 each), which would otherwise hold a burst of reconnects from one address back.
 */
const SPREAD = process.env.ESSH_FLEET_ONE_ADDRESS !== '1';
function sourceAddress(host: string, n: number): string | undefined {
  if (!SPREAD || !/^127\./.test(host)) return undefined;
  return `127.0.${1 + Math.floor(n / 250)}.${2 + (n % 250)}`;
}

/** Opens the shell (with the token, or the key once the token is spent) and waits for the prompt. */
async function connectOnce(c: Client, withKey: boolean): Promise<Held> {
  const shell = await openPortalShell(c.connect, {
    pty: { ...c.pty, term: 'xterm' }, readyTimeoutMs: 120_000, localAddress: c.localAddress,
    ...(withKey ? { privateKey: c.reattach!.privateKey } : {}),
  });
  const h: Held = { shell, stderr: '', lost: false, seen: [], seenBytes: 0 };
  shell.channel.on('data', (chunk: Buffer) => {
    if (h.seenBytes + chunk.length > SEEN_MAX) return;
    h.seen.push(chunk);
    h.seenBytes += chunk.length;
  });
  // ssh2 emits the client's 'close' (and 'end') before it closes the channels: by the channel's close
  // we know whether the connection went with it.
  shell.client.on('end', () => (h.lost = true));
  shell.client.on('close', () => (h.lost = true));
  shell.channel.stderr.on('data', (chunk: Buffer) => (h.stderr = (h.stderr + chunk.toString('utf8')).slice(-500)));
  // Attached once the program answers: its prompt (a shell) or any first output. A session-<id> attach
  // hears nothing from the portal while the container is provisioned, so a wait that ends here says what
  // the client saw, and the caller adds what the session's record says.
  try {
    await new Promise<void>((resolve, reject) => {
      let text = '';
      const seen = () => text
        ? `the program printed ${JSON.stringify(text.slice(-200))} but no prompt`
        : `no output from the program${h.stderr ? `; the portal wrote ${JSON.stringify(h.stderr)}` : ' and no word from the portal'}`;
      const timer = setTimeout(() => reject(new Error(`no prompt from session ${c.id} within ${PROMPT_WITHIN_MS / 1000} s of its shell channel opening: ${seen()}`)), PROMPT_WITHIN_MS);
      const onData = (chunk: Buffer) => {
        text += chunk.toString('latin1');
        if (PROMPT.test(text)) {
          clearTimeout(timer);
          shell.channel.off('data', onData);
          resolve();
        }
      };
      shell.channel.on('data', onData);
      shell.channel.once('close', () => {
        clearTimeout(timer);
        reject(new Error(`session ${c.id} closed before its prompt (${seen()})`));
      });
    });
  } catch (err) {
    shell.close();
    throw err;
  }
  // Output is read and dropped from now on (a shell that prints must never be held back by us).
  shell.channel.on('data', () => undefined);
  return h;
}

/** Holds the client's shell, and follows its end: the parent asked, the session ended, or the connection went. */
function hold(c: Client, h: Held) {
  c.held = h;
  // The portal closes the channel when the session ends for a reason of its own (terminate, expiry,
  // or the workflow deciding the client is gone): that is what a false disconnect looks like here.
  void h.shell.exitCode.then((code) => {
    if (c.held === h) c.held = undefined;
    h.shell.close();
    if (c.closing) {
      clients.delete(c.id);
      return;
    }
    // No exit status and the connection gone: the portal went away, the session may well live on.
    if (code === null && h.lost && c.reattach) {
      void reattach(c, Date.now());
      return;
    }
    clients.delete(c.id);
    send({ type: 'closed', id: c.id, at: Date.now(), exitCode: code, stderr: h.stderr });
  });
}

async function attach(m: Extract<FleetRequest, { type: 'attach' }>) {
  const started = performance.now();
  const c: Client = {
    id: m.id, connect: m.connect, pty: m.pty ?? { rows: 30, cols: 100 }, reattach: m.reattach,
    localAddress: sourceAddress(m.connect.host, attachedSoFar++), closing: false,
  };
  clients.set(m.id, c);
  try {
    hold(c, await connectOnce(c, false));
  } catch (err) {
    clients.delete(m.id);
    throw err;
  }
  return performance.now() - started;
}

/**
 * Comes back to the session as `session-<id>` with the owner's key, as a user whose connection broke
 * would, until the prompt is there again or `withinMs` has passed. Refused credentials end it at once
 * (the session has ended); anything else (the portal not listening yet, its guard turning the socket
 * away) is tried again after a short, jittered pause, so that N clients do not come back in lockstep.
 */
async function reattach(c: Client, lostAt: number) {
  send({ type: 'lost', id: c.id, at: lostAt });
  const deadline = lostAt + c.reattach!.withinMs;
  let attempts = 0;
  let pause = 200;
  let last = '';
  /** Each different reason an attempt failed, for the report (a few suffice). */
  const reasons = new Set<string>();
  while (!c.closing && Date.now() < deadline) {
    attempts++;
    try {
      const h = await connectOnce(c, true);
      if (c.closing) {
        h.shell.close();
        break;
      }
      hold(c, h);
      send({ type: 'reattached', id: c.id, at: Date.now(), lostAt, attempts });
      return;
    } catch (err) {
      last = (err as Error).message;
      if (reasons.size < 4) reasons.add(last.replace(/\d+/g, 'N'));
      if (err instanceof PortalRefusedError) break;
    }
    await sleep(pause * (0.5 + Math.random()));
    pause = Math.min(pause * 1.5, 2000);
  }
  clients.delete(c.id);
  if (c.closing) return;
  send({ type: 'closed', id: c.id, at: Date.now(), exitCode: null, stderr: `reattach failed after ${attempts} attempts in ${((Date.now() - lostAt) / 1000).toFixed(1)} s: ${last} (failures seen: ${[...reasons].join('; ')})`, reattachFailed: true });
}

/** Keystroke echo: one key every `everyMs`, each timed from its write to the first output after it. */
class EchoProbe {
  readonly samples: number[] = [];
  readonly missed: string[] = [];
  private stopped = false;
  private done?: Promise<void>;

  constructor(private readonly shell: PortalShell, private readonly everyMs: number) {}

  start() {
    this.done = (async () => {
      let typed = 0;
      while (!this.stopped) {
        // A line is cleared (Ctrl-U) now and then so it never wraps; its output is not a sample.
        if (++typed % 40 === 0) {
          this.shell.channel.write('\x15');
          await sleep(20);
        }
        const t0 = performance.now();
        const echoed = await new Promise<number | null>((resolve) => {
          const timer = setTimeout(() => {
            this.shell.channel.off('data', onData);
            resolve(null);
          }, 30_000);
          const onData = () => {
            clearTimeout(timer);
            resolve(performance.now() - t0);
          };
          this.shell.channel.once('data', onData);
          this.shell.channel.write('x');
        });
        if (echoed === null) this.missed.push(new Date().toISOString());
        else this.samples.push(echoed);
        await sleep(Math.max(0, this.everyMs - (performance.now() - t0)));
      }
    })();
  }

  async stop() {
    this.stopped = true;
    await this.done;
    this.shell.channel.write('\x15');
  }
}

let probe: EchoProbe | undefined;
/** Every client typing a key now and then, as users at their terminals would. */
let typing: NodeJS.Timeout | undefined;
let typed = 0;

process.on('message', (m: FleetRequest) => {
  void (async () => {
    try {
      switch (m.type) {
        case 'attach': {
          const ms = await attach(m);
          send({ type: 'attached', req: m.req, id: m.id, ms });
          break;
        }
        case 'echo-start': {
          const h = clients.get(m.id)?.held;
          if (!h) throw new Error(`no client holds session ${m.id}`);
          probe = new EchoProbe(h.shell, m.everyMs);
          probe.start();
          send({ type: 'ok', req: m.req });
          break;
        }
        case 'echo-stop': {
          const p = probe;
          probe = undefined;
          await p?.stop();
          send({ type: 'echo', req: m.req, samples: p?.samples ?? [], missed: p?.missed ?? [] });
          break;
        }
        case 'type-start': {
          clearInterval(typing);
          typing = setInterval(() => {
            // Letters, and a Ctrl-U now and then so that no line wraps.
            const key = ++typed % 40 === 0 ? '\x15' : String.fromCharCode(97 + (typed % 26));
            for (const c of clients.values()) c.held?.shell.channel.write(key);
          }, m.everyMs);
          send({ type: 'ok', req: m.req });
          break;
        }
        case 'type-stop':
          clearInterval(typing);
          typing = undefined;
          send({ type: 'ok', req: m.req });
          break;
        case 'seen': {
          const seen: Record<number, string> = {};
          for (const id of m.ids) {
            const h = clients.get(id)?.held;
            if (h) seen[id] = Buffer.concat(h.seen).toString('base64');
          }
          send({ type: 'seen', req: m.req, seen });
          break;
        }
        case 'status':
          // Open: attached now (a client that is reattaching is not).
          send({ type: 'status', req: m.req, open: [...clients.values()].filter((c) => c.held).map((c) => c.id) });
          break;
        case 'close': {
          const ids = m.ids ?? [...clients.keys()];
          for (const id of ids) {
            const c = clients.get(id);
            if (!c) continue;
            c.closing = true;
            c.held?.shell.close();
          }
          send({ type: 'ok', req: m.req });
          break;
        }
      }
    } catch (err) {
      send({ type: 'error', req: m.req, id: 'id' in m ? m.id : undefined, message: (err as Error).message });
    }
  })();
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
