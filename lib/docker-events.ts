import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
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
      // A label's multibyte character may be split across two chunks.
      const decoder = new StringDecoder('utf8');
      stream.on('data', (chunk: Buffer) => {
        buffered += decoder.write(chunk);
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          let event: ContainerEvent;
          try {
            event = JSON.parse(line) as ContainerEvent;
          } catch {
            // Thrown here it would end the process; the periodic pass catches up on a lost event.
            log.warn(`${what}: skipped a Docker event that is not JSON`);
            continue;
          }
          this.opts.onEvent(event);
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
