import { readFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';

/** A TCP port on 127.0.0.1 that nothing listens on at the moment of asking. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
    srv.once('error', reject);
  });
}

/**
 * A free port on 127.0.0.1 below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range),
 * for a listener that is stopped and started again on the same port, or bound some time after it is
 * picked (the Temporal SDK's metrics exporter): a port from that range may be
 * handed to another program's outgoing connection while it is free (EADDRINUSE at the restart, seen in
 * CI under load), one below it only to another explicit bind.
 */
export async function restartableLoopbackPort(): Promise<number> {
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
  return freeLoopbackPort();
}
