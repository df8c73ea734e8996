import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from './log.js';

export interface ContainerEvent {
  id: string;
  Action?: string;
  Actor?: { Attributes?: Record<string, string> };
}

/**
 * Follows the engine's container events (newline-delimited JSON) and reconnects when the stream ends,
 * e.g. when dockerd restarts. Events missed while disconnected are the caller's to catch up on:
 * `onResumed` runs after each reconnection.
 */
export class ContainerEventFollower {
  private stream?: Readable;
  private stopped = false;

  constructor(
    private readonly opts: {
      docker: Docker;
      events: string[];
      labels: string[];
      onEvent: (event: ContainerEvent) => void;
      onResumed: () => void;
      log: Logger;
      what: string;
    },
  ) {}

  async start(): Promise<void> {
    const { docker, events, labels, log, what } = this.opts;
    try {
      const stream = (await docker.getEvents({
        filters: { type: ['container'], event: events, label: labels },
      })) as unknown as Readable;
      this.stream = stream;
      let buffered = '';
      stream.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line) this.opts.onEvent(JSON.parse(line) as ContainerEvent);
        }
      });
      const reconnect = () => {
        if (this.stopped) return;
        log.warn(`${what}: the Docker event stream closed; reconnecting`);
        setTimeout(() => {
          if (!this.stopped) void this.start().then(() => this.opts.onResumed());
        }, 1000).unref();
      };
      stream.once('end', reconnect);
      stream.once('error', reconnect);
    } catch (err) {
      if (this.stopped) return;
      log.warn({ err }, `${what}: cannot follow Docker events; retrying in 5 s`);
      setTimeout(() => void this.start(), 5000).unref();
    }
  }

  stop(): void {
    this.stopped = true;
    this.stream?.destroy();
  }
}
