/**
 * A typist in a process of its own (bench/echo-vs-sshd.ts): runs OpenSSH's `ssh -tt ARGS…`, waits for
 * the remote shell's first output, then types one character every 50 ms and prints, per keystroke, one
 * JSON line `{"at": <epoch ms>, "ms": <echo delay>}` until it is killed. The timing is here, not in the
 * benchmark's process, because that process runs the portal: its busy event loop would be counted
 * against the portal's echo and not against sshd's.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

const SAMPLE_EVERY_MS = 50;

const args = process.argv.slice(2);
const ssh = spawn('ssh', ['-tt', ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
ssh.once('exit', (code) => {
  process.stderr.write(`echo-probe: ssh exited ${code}\n`);
  process.exit(1);
});
process.once('SIGTERM', () => {
  ssh.removeAllListeners('exit');
  ssh.kill('SIGTERM');
  process.exit(0);
});

let waiting: ((at: number) => void) | null = null;
let untilPrompt = '';
ssh.stdout.on('data', (chunk: Buffer) => {
  const at = performance.now();
  untilPrompt = (untilPrompt + chunk.toString('latin1')).slice(-200);
  waiting?.(at);
  waiting = null;
});
const nextOutput = () => new Promise<number>((resolve) => (waiting = resolve));

// The portal's notices come before the shell's prompt (`$ ` or `# `); nothing is typed ahead of it.
const told = setInterval(() => process.stderr.write(`echo-probe: no prompt yet; last output ${JSON.stringify(untilPrompt)}\n`), 5000);
while (!/[#$] (\x1b\[[0-9;?]*[a-zA-Z])*$/.test(untilPrompt)) await nextOutput();
clearInterval(told);
await sleep(300);
for (let typed = 1; ; typed++) {
  if (typed % 40 === 0) {
    // Ctrl-U now and then, so that the line never wraps; its redraw must not pass for an echo.
    ssh.stdin.write('\x15');
    await sleep(200);
  }
  const echoed = nextOutput();
  const started = performance.now();
  ssh.stdin.write('x');
  const ms = (await echoed) - started;
  process.stdout.write(`${JSON.stringify({ at: Date.now(), ms })}\n`);
  await sleep(SAMPLE_EVERY_MS);
}
