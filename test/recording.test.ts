import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTenant, runInSession, sleep, useTestStack, waitForState } from './support/harness.js';
import { expectRecordingOnlyForItsPeople } from './support/recordings.js';
import { Terminal, passwordOnly, q, sshArgs, writeSecretFile } from './support/portal-terminal.js';

const run = promisify(execFile);
const stack = useTestStack();
let tenant: Awaited<ReturnType<typeof createTenant>>;
let dir: string;
const terminals: Terminal[] = [];

/** The demo image's shell prompt. */
const PROMPT = /:\/app[$#] $/m;

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-recording-'));
});
afterAll(async () => {
  for (const t of terminals) await t.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a session recording', () => {
  it('played back by asciinema cat shows exactly what the user saw, with timings, and never the no-echo password', async () => {
    const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
    expect(r.status).toBe(201);
    const id = r.body.id as number;
    // OpenSSH in a real terminal (tmux), the session token as password. Its output also goes through
    // `tee` into a file: the bytes the terminal was sent, exactly (the portal's own notices go to
    // ssh's stderr, straight to the terminal).
    const tokenFile = await writeSecretFile(dir, `token-${id}`, r.body.connect.token);
    const shown = path.join(dir, `${id}.terminal`);
    const sshArgv = ['-tt', ...sshArgs(r.body.connect.port, passwordOnly), `${r.body.connect.user}@127.0.0.1`];
    const term = await Terminal.start(`sshpass -f ${q(tokenFile)} ssh ${sshArgv.map(q).join(' ')} | tee ${q(shown)}`, { cols: 100, rows: 30 });
    terminals.push(term);
    await term.waitForText(PROMPT);
    await term.typeLine('printf "\\033[1;32mgreen\\033[0m Ünïcødé ✓\\n"');
    await term.waitForText(/^green Ünïcødé ✓\s*$/m);
    await sleep(1200);
    await term.typeLine('read -s -p "Password: " PASS; echo; echo "[${#PASS}]"');
    // The prompt comes once echo is off; a moment more for a loaded machine.
    await term.waitForText(/^Password:\s*$/m);
    await sleep(300);
    await term.typeLine('s3cr3t-Passw0rd');
    await term.waitForText(/^\[15\]\s*$/m);
    expect(await term.screen()).not.toContain('s3cr3t-Passw0rd');
    await term.typeLine('exit 0');
    expect(await term.exitStatus()).toBe(0);
    await waitForState(stack, tenant.token, id, 'ended');

    const rec = await fetch(`${stack.url}/sessions/${id}/recording`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(rec.status).toBe(200);
    expect(rec.headers.get('content-type')).toMatch(/^application\/x-asciicast/);
    const cast = await rec.text();
    const [headerLine, ...frames] = cast.trimEnd().split('\n');
    // The program started when the client attached, in the client's terminal: its size is the header's.
    expect(JSON.parse(headerLine!)).toMatchObject({ version: 2, width: 100, height: 30 });
    expect(frames.filter((f) => (JSON.parse(f) as [number, string, string])[1] === 'r')).toEqual([]);
    const times = frames.map((f) => (JSON.parse(f) as [number, string, string])[0]);
    for (let i = 1; i < times.length; i++) expect(times[i]!).toBeGreaterThanOrEqual(times[i - 1]!);
    expect(times[times.length - 1]! - times[0]!).toBeGreaterThan(1); // the pause is in the timings

    const file = path.join(dir, `${id}.cast`);
    await writeFile(file, cast);
    // `asciinema cat` insists on a controlling terminal (it opens /dev/tty): `script` gives it one, while
    // its stdout goes to a file, untouched by any terminal's newline translation.
    const played = path.join(dir, `${id}.out`);
    await run('script', ['-qec', `asciinema cat ${file} > ${played}`, '/dev/null'], { env: { ...process.env, LANG: 'C.UTF-8' } });
    const playback = await readFile(played, 'utf8');
    const terminal = await readFile(shown, 'utf8');
    expect(terminal).toContain('\u001b[1;32mgreen\u001b[0m Ünïcødé ✓');
    // The program started when the terminal attached: what it was sent is, byte for byte, the playback.
    expect(playback === terminal, `playback:\n${JSON.stringify(playback.slice(-600))}\nterminal:\n${JSON.stringify(terminal.slice(-600))}`).toBe(true);
    expect(playback).toContain('\u001b[1;32mgreen\u001b[0m Ünïcødé ✓');
    expect(playback).not.toContain('s3cr3t-Passw0rd');
    expect(cast).not.toContain('s3cr3t-Passw0rd');
  });

  it('is served to the owner, account admins and operators only', async () => {
    const { id } = await runInSession(stack, tenant, { command: ['sh', '-c', 'echo private-output'] });
    expect((await stack.api.get(`/sessions/${id}/recording`, tenant.token)).status).toBe(200);
    await expectRecordingOnlyForItsPeople(stack, tenant, id);
  });
});
