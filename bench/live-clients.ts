// The SSH clients of the live-sessions benchmark and of test/scale-live-sessions.test.ts, in a process
// of their own (node --import tsx bench/live-clients.ts, started by bench/live-fleet.ts): each holds one
// ssh2 connection with a PTY shell open on its session through the portal, as a user's terminal would,
// so that the runtime under test pays for the portal's side only. Driven over the IPC channel.
import { performance } from 'node:perf_hooks';
import { openPortalShell, type PortalShell, type PortalTarget } from '../portal/client.js';
import { DEMO_PROMPT as PROMPT } from '../stack/seed.js';
import type { FleetReply, FleetRequest } from './live-fleet.js';

interface Held {
  shell: PortalShell;
  /** The parent asked to close it: its end is no surprise. */
  closing: boolean;
  /** The last of what the portal wrote on stderr (an end notice says why). */
  stderr: string;
}

const held = new Map<number, Held>();

/** To the parent, while it listens (a parent that left is no error of ours). */
const send = (m: FleetReply) => {
  if (process.connected) process.send?.(m, undefined, undefined, () => undefined);
};

async function attach(id: number, connect: PortalTarget, pty: { rows: number; cols: number }) {
  const started = performance.now();
  const shell = await openPortalShell(connect, { pty: { ...pty, term: 'xterm' }, readyTimeoutMs: 120_000 });
  const h: Held = { shell, closing: false, stderr: '' };
  held.set(id, h);
  shell.channel.stderr.on('data', (c: Buffer) => (h.stderr = (h.stderr + c.toString('utf8')).slice(-500)));
  // The portal closes the channel when the session ends for a reason of its own (terminate, expiry,
  // or the workflow deciding the client is gone): that is what a false disconnect looks like here.
  void shell.exitCode.then((code) => {
    held.delete(id);
    shell.close();
    if (!h.closing) send({ type: 'closed', id, at: Date.now(), exitCode: code, stderr: h.stderr });
  });
  // Attached once the program answers: its prompt (a shell) or any first output.
  await new Promise<void>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no prompt from session ${id} within 120 s: ${JSON.stringify(text.slice(-200))} ${h.stderr}`)), 120_000);
    const onData = (c: Buffer) => {
      text += c.toString('latin1');
      if (PROMPT.test(text)) {
        clearTimeout(timer);
        shell.channel.off('data', onData);
        resolve();
      }
    };
    shell.channel.on('data', onData);
    shell.channel.once('close', () => {
      clearTimeout(timer);
      reject(new Error(`session ${id} closed before its prompt: ${h.stderr}`));
    });
  });
  // Output is read and dropped from now on (a shell that prints must never be held back by us).
  shell.channel.on('data', () => undefined);
  return performance.now() - started;
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
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

process.on('message', (m: FleetRequest) => {
  void (async () => {
    try {
      switch (m.type) {
        case 'attach': {
          const ms = await attach(m.id, m.connect, m.pty ?? { rows: 30, cols: 100 });
          send({ type: 'attached', req: m.req, id: m.id, ms });
          break;
        }
        case 'echo-start': {
          const h = held.get(m.id);
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
        case 'status':
          send({ type: 'status', req: m.req, open: [...held.keys()] });
          break;
        case 'close': {
          const ids = m.ids ?? [...held.keys()];
          for (const id of ids) {
            const h = held.get(id);
            if (!h) continue;
            h.closing = true;
            h.shell.close();
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
