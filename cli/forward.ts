import net from 'node:net';
import type { Client } from 'ssh2';
import { printable } from '../lib/printable.js';

/** One `-L [BIND:]LOCAL:TARGET:PORT`, as OpenSSH writes it (an IPv6 address in brackets). */
export interface LocalForward {
  bind: string;
  localPort: number;
  target: string;
  targetPort: number;
}

const LOCAL_FORWARD = /^(?:(\[[^\]]+\]|[^:[\]]+):)?(\d{1,5}):(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/;

/** Parses `-L`; the error says what the shape is (commander prints it and exits 1). */
export function parseLocalForward(value: string): LocalForward | string {
  const m = LOCAL_FORWARD.exec(value);
  const unbracket = (s: string) => s.replace(/^\[(.*)\]$/, '$1');
  const port = (s: string | undefined) => Number(s);
  if (!m || port(m[2]) > 65535 || port(m[4]) < 1 || port(m[4]) > 65535) {
    return `-L takes [BIND:]LOCAL_PORT:TARGET:PORT as ssh -L does, e.g. -L 5432:db.internal:5432 (the target as the session's container reaches it); got "${value}".`;
  }
  return { bind: m[1] ? unbracket(m[1]) : '127.0.0.1', localPort: port(m[2]), target: unbracket(m[3]!), targetPort: port(m[4]) };
}

/**
 * Listens on each forward's local address and, for each connection, opens a direct-tcpip channel on
 * the portal connection (the portal connects from inside the session's container, portal/forward.ts)
 * and pipes the two with half-closes. A refused channel closes that connection and says why on stderr.
 * Resolves once every listener listens; the returned function closes them.
 */
export async function startLocalForwards(client: Client, forwards: LocalForward[], say: (line: string) => void): Promise<() => void> {
  const servers: net.Server[] = [];
  const close = () => {
    for (const s of servers) s.close();
  };
  try {
    for (const f of forwards) {
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on('error', () => undefined);
        client.forwardOut(socket.remoteAddress ?? '127.0.0.1', socket.remotePort ?? 0, f.target, f.targetPort, (err, channel) => {
          if (err) {
            say(`essh: forward to ${f.target}:${f.targetPort} refused: ${printable(err.message.replace(/^\(SSH\) Channel open failure: /, ''))}`);
            socket.destroy();
            return;
          }
          socket.pipe(channel);
          channel.pipe(socket);
          channel.on('error', () => socket.destroy());
          channel.on('close', () => socket.destroy());
          socket.on('close', () => channel.close());
        });
      });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(new Error(`cannot listen on ${f.bind}:${f.localPort} for -L (${err.code ?? err.message}); pick another local port.`)));
        server.listen(f.localPort, f.bind, () => resolve());
      });
    }
  } catch (err) {
    close();
    throw err;
  }
  return close;
}
