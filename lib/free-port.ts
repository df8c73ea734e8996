import { readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';

/**
 * A free TCP port on 127.0.0.1 for a listener bound some time after it is picked (by another process,
 * or stopped and started again on the same port). It comes from below the kernel's ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range): a port from that range may be handed to any program's
 * outgoing connection while it is free (EADDRINUSE seen in CI under load: a worker's metrics port, a
 * Temporal SDK exporter's), one below it only to another explicit bind. A listener bound at once should
 * listen on port 0 instead.
 */
export async function freeLoopbackPort(): Promise<number> {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    /* not Linux: the usual default */
  }
  const from = Math.max(1024, low - 12000);
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = from + Math.floor(Math.random() * (low - from));
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer().once('error', () => resolve(false)).listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  return anyFreePort();
}

function anyFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
    srv.once('error', reject);
  });
}
