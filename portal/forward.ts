import type { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import type { Connection, ServerChannel, TcpipRequestInfo } from 'ssh2';
import { dockerMessage } from '../lib/docker.js';
import { printable } from '../lib/printable.js';
import { runningContainer } from './running-container.js';
import { RELAY_IN_CONTAINER } from '../host/containers.js';
import type { ForwardDetails } from '../journal/format.js';
import { appendRecord, recordedUser, type RecordDeps } from './records.js';
import { helperOutput } from './helper-exec.js';

/** RFC 4254 §5.1 reason codes a refused channel carries (OpenSSH prints their names). */
export const OPEN_FAILURE = { administrativelyProhibited: 1, connectFailed: 2 } as const;

/**
 * Refuses a channel with a reason code and a sentence the client shows ("open failed: administratively
 * prohibited: …"). ssh2's own reject() sends neither (always "connect failed" with an empty
 * description), so its protocol's channelOpenFail, which reject() calls synchronously, is given ours
 * for that one call. ssh2 1.17's private `_protocol`: test/port-forward.test.ts checks what OpenSSH prints.
 */
export function refuseChannel(conn: Connection, reject: () => void, reason: number, description: string): void {
  const proto = (conn as unknown as { _protocol?: { channelOpenFail: (recipient: number, reason: number, desc: string) => void } })._protocol;
  if (!proto) return reject();
  const original = proto.channelOpenFail;
  proto.channelOpenFail = (recipient) => original.call(proto, recipient, reason, description);
  try {
    reject();
  } finally {
    proto.channelOpenFail = original;
  }
}

export interface ForwardDeps extends RecordDeps {
  docker: Docker;
}

/** One `ssh -L` connection: the session it goes through and who asked. */
export interface ForwardRequest {
  sessionId: number;
  userId: number;
  info: TcpipRequestInfo;
  accept: () => ServerChannel;
  /** Refuses the channel with a reason code and a sentence. */
  refuse: (reason: number, description: string) => void;
}

/**
 * What the relay says on stderr: the first line "connected PID" or why it could not; later "eof N" once
 * the target half-closed after N bytes. Docker keeps no order between an exec's stdout and stderr, so
 * the target's bytes wait for "connected", and the client's EOF for the Nth byte.
 */
const CONNECTED = /^connected (\d+)$/;
const EOF = /^eof (\d+)$/;
const EARLY_BYTES_MAX = 1024 * 1024;

/**
 * Serves one direct-tcpip channel: `essh-relay TARGET PORT` (host/init/essh-relay.c) runs by `docker exec`
 * in the session's container, so the connection leaves from the app's own network namespace under the
 * container's egress rules; the channel is accepted only once it has connected. The bytes go between
 * the channel and the relay and nowhere else: the journal gets one `forward` record per connection
 * (target, bytes each way, duration, who: journal/format.ts ForwardDetails), the drains' `port_forward`
 * event and a marker in the recording.
 */
export async function serveForward(deps: ForwardDeps, req: ForwardRequest): Promise<void> {
  const { db, docker, log } = deps;
  const { sessionId, info } = req;
  const target = { host: info.destIP, port: info.destPort };
  const started = Date.now();
  // essh ssh -L and ssh -L app@host forward as soon as their shell's channel is open: maybe early.
  const running = await runningContainer(db, sessionId);
  const user = await recordedUser(db, req.userId);
  const record = (d: Pick<ForwardDetails, 'connected' | 'error' | 'bytes_to_target' | 'bytes_from_target'>) =>
    appendRecord(deps, sessionId, 'a port forward', (journal) => journal.forward({
      user, target_host: target.host, target_port: target.port, ...d, duration_s: Number(((Date.now() - started) / 1000).toFixed(3)),
    }));
  if ('refused' in running) return req.refuse(OPEN_FAILURE.administrativelyProhibited, `${running.refused}: nothing to forward from`);
  if (!running.portForwarding) {
    const why = `essh: port forwarding is turned off for account ${running.account} by its operator`;
    record({ connected: false, error: why, bytes_to_target: 0, bytes_from_target: 0 });
    return req.refuse(OPEN_FAILURE.administrativelyProhibited, why);
  }

  const container = docker.getContainer(running.containerId);
  let stream: Duplex;
  try {
    const exec = await container.exec({ Cmd: [RELAY_IN_CONTAINER, target.host, String(target.port)], AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false });
    stream = (await exec.start({ hijack: true, stdin: true })) as unknown as Duplex;
  } catch (err) {
    log.warn({ err: dockerMessage(err), session: sessionId }, 'starting the port-forwarding relay failed');
    return req.refuse(OPEN_FAILURE.connectFailed, `essh: session ${sessionId}: the relay could not start in its container (${dockerMessage(err)})`);
  }

  let channel: ServerChannel | null = null;
  let relayPid: number | null = null;
  let relayDone = false;
  let answered = false;
  let failure = '';
  let toTarget = 0;
  let fromTarget = 0;
  /** The target's bytes the channel has sent on. */
  let sentToClient = 0;
  /** Where the target's half-close falls in its bytes, once the relay has said so. */
  let eofAt: number | null = null;
  let eofSent = false;
  const eofWhenSent = () => {
    if (channel && !eofSent && eofAt !== null && sentToClient >= eofAt) {
      eofSent = true;
      // The client's EOF, while what it sends still goes through (end() would also close a server channel).
      channel.eof();
    }
  };
  /**
   * The target's bytes that came before "connected" (the order Docker lost). Taken at once: the
   * demultiplexer hands over one frame at a time, and "connected" may be in a later one.
   */
  const early: Buffer[] = [];
  let earlyBytes = 0;
  const toClient = (chunk: Buffer, cb: (err?: Error | null) => void) => channel!.write(chunk, (err?: Error | null) => {
    sentToClient += chunk.length;
    eofWhenSent();
    cb(err);
  });
  const onLine = (line: string) => {
    if (!answered) {
      answered = true;
      const m = CONNECTED.exec(line);
      if (!m) {
        failure = printable(line).slice(0, 300);
        return;
      }
      relayPid = Number(m[1]);
      channel = req.accept();
      channel.on('data', (chunk: Buffer) => (toTarget += chunk.length));
      // The client's EOF is the target's: the relay half-closes its socket.
      channel.pipe(stream);
      channel.on('error', () => undefined);
      for (const chunk of early.splice(0)) toClient(chunk, () => undefined);
      // The client closed the channel while the target keeps its side open: the relay would wait on it.
      channel.once('close', () => {
        if (relayDone) return;
        void container.exec({ Cmd: [RELAY_IN_CONTAINER, '--stop', String(relayPid)], AttachStdout: false, AttachStderr: false })
          .then((stop) => stop.start({ Detach: true }))
          .catch((err) => log.debug({ err: dockerMessage(err), session: sessionId }, 'stopping a relay failed'));
      });
      return;
    }
    const eof = EOF.exec(line);
    if (eof) {
      eofAt = Number(eof[1]);
      eofWhenSent();
    }
  };
  // The relay's stdout is the target's bytes, to the channel with its back-pressure; they are never journaled.
  const relay = helperOutput(stream, {
    write: (chunk, cb) => {
      fromTarget += chunk.length;
      if (channel) return toClient(chunk, cb);
      early.push(chunk);
      earlyBytes += chunk.length;
      // What Docker reorders is what the relay's pipes hold; more means the relay is not ours.
      cb(earlyBytes > EARLY_BYTES_MAX ? new Error('the relay sent data before saying it connected') : null);
      return true;
    },
  }, onLine, log, sessionId, 'relay');
  await relay.ended;
  relayDone = true;
  if (!answered || !channel) {
    const why = failure || relay.partialLine().trim() || 'the relay ended without connecting';
    record({ connected: false, error: why, bytes_to_target: 0, bytes_from_target: 0 });
    return req.refuse(OPEN_FAILURE.connectFailed, `${target.host}:${target.port}: ${why.replace(/^[^ ]*:\d+: /, '')}`);
  }
  const open: ServerChannel = channel;
  open.unpipe(stream);
  // The relay is done with both directions: the client gets the end, if the channel is still open.
  if (!open.destroyed) open.end();
  record({ connected: true, bytes_to_target: toTarget, bytes_from_target: fromTarget });
}
