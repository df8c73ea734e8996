import type { Duplex } from 'node:stream';
import type { Logger } from '../lib/log.js';
import { JournaledOutput, type Target } from '../journal/journaled-output.js';

/** Kept of a helper's stderr without a line break: what it says is a line or two. */
const PARTIAL_LINE_MAX = 4096;

/**
 * The hijacked stream of a helper the portal runs in a session's container by `docker exec` without a
 * TTY (the port-forwarding relay, sftp-server): its stdout to `stdout` a frame at a time with the
 * channel's back-pressure, never journaled (it is not the session's program's output), its stderr to
 * `onLine` one line at a time. `ended` resolves once the stream is done; `partialLine` is what stderr
 * said after its last line break.
 */
export function helperOutput(stream: Duplex, stdout: Target, onLine: (line: string) => void, log: Logger, session: number, what: string) {
  let stderrLine = '';
  const demuxed = new JournaledOutput(
    stdout,
    {
      write: (chunk, cb) => {
        stderrLine = (stderrLine + chunk.toString('utf8')).slice(-PARTIAL_LINE_MAX);
        for (let nl = stderrLine.indexOf('\n'); nl >= 0; nl = stderrLine.indexOf('\n')) {
          onLine(stderrLine.slice(0, nl));
          stderrLine = stderrLine.slice(nl + 1);
        }
        cb();
        return true;
      },
    },
    true,
    () => true,
  );
  stream.on('error', (err) => log.debug({ err: err.message, session }, `${what} stream error`));
  demuxed.on('error', () => stream.destroy());
  const ended = new Promise<void>((resolve) => {
    demuxed.once('finish', resolve);
    demuxed.once('close', resolve);
    stream.once('close', resolve);
  });
  stream.pipe(demuxed);
  return { ended, partialLine: () => stderrLine };
}
