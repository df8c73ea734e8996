// A process of SSH clients (bench/live-clients.ts) that the live-sessions benchmark and the scale test
// drive from the parent: attach one client per session, time keystroke echoes in one, hear of every
// client the portal let go without being asked, and of every lost connection and reattach.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PortalTarget } from '../cli/portal-client.js';

export type FleetRequest = { req: number } & (
  | {
    type: 'attach'; id: number; connect: PortalTarget; pty?: { rows: number; cols: number };
    /** The session owner's private key: on a lost connection the client reattaches with it for up to `withinMs`. */
    reattach?: { privateKey: string; withinMs: number };
  }
  | { type: 'echo-start'; id: number; everyMs: number }
  | { type: 'echo-stop' }
  | { type: 'status' }
  | { type: 'type-start'; everyMs: number }
  | { type: 'type-stop' }
  | { type: 'seen'; ids: number[] }
  | { type: 'close'; ids?: number[] }
);

export type FleetReply =
  | { type: 'ready' }
  | { type: 'attached'; req: number; id: number; ms: number }
  | { type: 'echo'; req: number; samples: number[]; missed: string[] }
  | { type: 'status'; req: number; open: number[] }
  /** What each client's connection got from its program so far (base64), by session id. */
  | { type: 'seen'; req: number; seen: Record<number, string> }
  | { type: 'ok'; req: number }
  | { type: 'error'; req: number; id?: number; message: string }
  /**
   * A client whose channel the portal closed without the parent asking: its session ended under it; or
   * one that lost its connection and could not reattach (`reattachFailed`).
   */
  | { type: 'closed'; id: number; at: number; exitCode: number | null; stderr: string; reattachFailed?: boolean }
  /** A client with a key lost its connection (epoch ms) and is reattaching. */
  | { type: 'lost'; id: number; at: number }
  /** …and has its prompt again (epoch ms), after `attempts` connections. */
  | { type: 'reattached'; id: number; at: number; lostAt: number; attempts: number };

type Pending = { resolve: (r: FleetReply) => void; reject: (e: Error) => void };
type RequestBody = FleetRequest extends infer R ? (R extends { req: number } ? Omit<R, 'req'> : never) : never;

const CLIENTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'live-clients.ts');

export interface ClientFleet {
  pid: number;
  /**
   * Opens a PTY shell on the session through the portal; resolves once its prompt is there (ms it took).
   * With `reattach`, a lost connection is followed by reattaching with the owner's key.
   */
  attach(id: number, connect: PortalTarget, reattach?: { privateKey: string; withinMs: number }): Promise<number>;
  echoStart(id: number, everyMs: number): Promise<void>;
  echoStop(): Promise<{ samples: number[]; missed: string[] }>;
  open(): Promise<number[]>;
  /** Every client types a key each `everyMs` until `typeStop`. */
  typeStart(everyMs: number): Promise<void>;
  typeStop(): Promise<void>;
  /** What these clients' connections got from their programs so far, by session id. */
  seen(ids: number[]): Promise<Map<number, Buffer>>;
  /** Closes these clients (all if none named), as their users would. */
  close(ids?: number[]): Promise<void>;
  /** Clients the portal let go unasked, and those that could not reattach, in order. */
  readonly unexpectedCloses: Extract<FleetReply, { type: 'closed' }>[];
  /** Lost connections and reattaches, in order. */
  readonly losses: Extract<FleetReply, { type: 'lost' }>[];
  readonly reattaches: Extract<FleetReply, { type: 'reattached' }>[];
  stop(): Promise<void>;
}

export async function startClientFleet(): Promise<ClientFleet> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', CLIENTS], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: process.env,
  });
  const pending = new Map<number, Pending>();
  const unexpectedCloses: Extract<FleetReply, { type: 'closed' }>[] = [];
  const losses: Extract<FleetReply, { type: 'lost' }>[] = [];
  const reattaches: Extract<FleetReply, { type: 'reattached' }>[] = [];
  let next = 1;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`the client fleet exited (${code ?? signal}) before it was ready`)));
    child.on('message', (m: FleetReply) => {
      if (m.type === 'ready') return resolve();
      if (m.type === 'closed') {
        unexpectedCloses.push(m);
        return;
      }
      if (m.type === 'lost') {
        losses.push(m);
        return;
      }
      if (m.type === 'reattached') {
        reattaches.push(m);
        return;
      }
      const p = pending.get(m.req);
      if (!p) return;
      pending.delete(m.req);
      if (m.type === 'error') p.reject(new Error(m.message));
      else p.resolve(m);
    });
  });
  child.once('exit', () => {
    for (const p of pending.values()) p.reject(new Error('the client fleet exited'));
    pending.clear();
  });
  await ready;
  const call = (body: RequestBody) =>
    new Promise<FleetReply>((resolve, reject) => {
      const req = next++;
      pending.set(req, { resolve, reject });
      child.send({ ...body, req } as FleetRequest);
    });
  return {
    pid: child.pid!,
    unexpectedCloses,
    losses,
    reattaches,
    async attach(id, connect, reattach) {
      const r = await call({ type: 'attach', id, connect, reattach });
      return r.type === 'attached' ? r.ms : NaN;
    },
    async echoStart(id, everyMs) {
      await call({ type: 'echo-start', id, everyMs });
    },
    async echoStop() {
      const r = await call({ type: 'echo-stop' });
      return r.type === 'echo' ? { samples: r.samples, missed: r.missed } : { samples: [], missed: [] };
    },
    async open() {
      const r = await call({ type: 'status' });
      return r.type === 'status' ? r.open : [];
    },
    async typeStart(everyMs) {
      await call({ type: 'type-start', everyMs });
    },
    async typeStop() {
      await call({ type: 'type-stop' });
    },
    async seen(ids) {
      const r = await call({ type: 'seen', ids });
      return new Map(r.type === 'seen' ? Object.entries(r.seen).map(([id, b64]) => [Number(id), Buffer.from(b64, 'base64')]) : []);
    },
    async close(ids) {
      await call({ type: 'close', ids });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.disconnect();
      const forced = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(forced);
    },
  };
}
