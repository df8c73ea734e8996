// How an API replica stops on a deploy (SIGTERM) without failing a request sent through the proxy in
// front of it (deploy/nginx/essh-api.conf: several replicas in one upstream).
import type { Server, ServerResponse } from 'node:http';
import net from 'node:net';

export interface Drainable {
  /**
   * Stops taking connections and lets the open ones end on their own: the proxy then sends new requests
   * to the other replicas (a refused connect is retried there, POSTs included, since nothing was sent).
   * An open keep-alive connection is not closed under the proxy's feet: it may be writing a request on
   * it at that moment, and a POST it has sent it cannot retry. Instead every answer from now on, those
   * under way included, says `Connection: close`, and a connection left idle is closed by the proxy
   * itself, whose upstream keepalive_timeout (4 s) is shorter than the server's keepAliveTimeout (5 s).
   * Whatever is still open at `deadlineMs` is closed. Resolves with the number of connections closed so.
   */
  closeGracefully(deadlineMs: number): Promise<number>;
}

/** Follows `server`'s answers under way from now on, so that a later drain can close their connections after them. */
export function drainable(server: Server): Drainable {
  const underWay = new Set<ServerResponse>();
  let draining = false;
  server.prependListener('request', (_req, res: ServerResponse) => {
    if (draining) res.setHeader('Connection', 'close');
    underWay.add(res);
    res.once('close', () => underWay.delete(res));
  });
  return {
    async closeGracefully(deadlineMs) {
      draining = true;
      for (const res of underWay) if (!res.headersSent) res.setHeader('Connection', 'close');
      const ended = new Promise<void>((resolve) => {
        // net.Server's close, not http.Server's: the latter also closes idle connections at once (Node ≥ 19).
        net.Server.prototype.close.call(server, () => resolve());
      });
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
      const outcome = await Promise.race([ended, late]);
      clearTimeout(timer);
      if (outcome !== 'late') return 0;
      const open = await new Promise<number>((resolve) => server.getConnections((_err, n) => resolve(n ?? 0)));
      server.closeAllConnections();
      await ended;
      return open;
    },
  };
}

/** Closes `server` and every connection it has at once (a test's receiver, a listener being stopped for good). */
export function closeNow(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
