import readline from 'node:readline';
import { Writable } from 'node:stream';
import { CliError } from './config.js';

/**
 * Asks for a secret on the terminal without echoing it, as `docker login` and `ssh` do. Node's own
 * readline does the line editing (backspace, Ctrl-U, pasted text) in raw mode; its echo goes to a
 * Writable that drops everything, which is what the `read` package does with mute-stream, without
 * a dependency for it. Ctrl-C gives the terminal back as it was and ends essh with 130; Ctrl-D on an
 * empty line answers "".
 */
export function promptHidden(question: string, input = process.stdin, output: NodeJS.WriteStream = process.stderr): Promise<string> {
  if (!input.isTTY) throw new CliError('no terminal to ask for the token on: pass it on stdin with --token-stdin');
  const muted = new Writable({ write: (_chunk, _enc, done) => done() });
  // The interface puts the terminal in raw mode (no echo) as it is made: the question comes after, so
  // that nothing typed as soon as it shows is echoed.
  const rl = readline.createInterface({ input, output: muted, terminal: true, historySize: 0 });
  output.write(question);
  return new Promise<string>((resolve) => {
    let answered = false;
    const finish = () => {
      rl.close();
      input.pause();
      output.write('\n');
    };
    rl.once('line', (line) => {
      answered = true;
      finish();
      resolve(line);
    });
    rl.once('SIGINT', () => {
      finish();
      process.exit(130);
    });
    rl.once('close', () => {
      if (answered) return;
      // Ctrl-D (or input's end) before Enter.
      answered = true;
      input.pause();
      output.write('\n');
      resolve('');
    });
  });
}

/** Everything on stdin, for `--token-stdin`: the token without its trailing newline. */
export async function readStdin(input: NodeJS.ReadableStream = process.stdin): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of input) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks).toString('utf8').trim();
}
