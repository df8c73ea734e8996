import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { observeQueries } from '../lib/db.js';
import { projectRoot } from '../lib/config.js';
import { openPortalShell, waitForShellOutput } from '../cli/portal-client.js';
import { DEMO_PROMPT } from '../server/seed.js';
import { createTenant, useTestStack } from './support/harness.js';

/**
 * The SSH portal under abuse (docs/threat-model.md): unauthenticated connections held open and bad
 * passwords by the thousand, from a process of their own, while a real user opens sessions.
 */

const stack = useTestStack();
let tenant: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
});
afterAll(async () => {
  observeQueries(undefined);
}, 120_000);

/** A user's new session: POST, attach through the portal, and the prompt. */
async function openToPrompt(): Promise<void> {
  const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const shell = await openPortalShell(r.body.connect, { pty: { rows: 24, cols: 80 } });
  await waitForShellOutput(shell, DEMO_PROMPT, 30_000);
  shell.channel.end('exit\n');
  await shell.exitCode;
  shell.close();
}

describe('the SSH portal under abuse', () => {
  // How much slower the prompt is under attack (issue 10's target: within 2× alone) is measured by
  // `npm run bench -- portal-abuse`: two timings a minute apart are only comparable on a quiet machine,
  // and this suite runs three files at once (CI once saw 706 ms alone, then 2322 and 5198 ms).
  it('200 unauthenticated connections and 1000 bad passwords write nothing, and an authenticated user still gets prompts meanwhile', async () => {
    await openToPrompt();

    // The bad passwords are for a real session: each one reaches the token check.
    const target = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, {});
    const attack = (holdFrom: string, guessFrom: string) => {
      const child = spawn(process.execPath, [
        '--import', 'tsx', 'test/support/portal-attacker.ts', String(stack.runtime.sshPort), `session-${target.body.id}`, holdFrom, guessFrom, '200', '1000',
      ], { cwd: projectRoot, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      const report = new Promise<{ tried: number; heldOpen: number }>((resolve, reject) =>
        child.once('exit', () => (out ? resolve(JSON.parse(out)) : reject(new Error('the attacker printed nothing')))));
      report.catch(() => undefined);
      return { child, report };
    };

    // Alone, the attack writes nothing: the writes watched here are the credential tables'.
    const writes: string[] = [];
    observeQueries((sql) => {
      if (/^\s*(insert|update|delete)\b/i.test(sql) && /session_tokens|api_tokens|ssh_keys/.test(sql)) writes.push(sql);
    });
    const first = attack('127.0.0.2', '127.0.1.0');
    const { tried, heldOpen } = await first.report.finally(() => observeQueries(undefined));
    expect(tried).toBeGreaterThanOrEqual(1000);
    expect(writes, writes.join('\n')).toEqual([]);
    // One address keeps at most 10 connections in the authentication phase.
    expect(heldOpen).toBeLessThanOrEqual(10);
    // And /metrics' essh_portal_refused_connections_total says which limit turned the other 190 away.
    expect(stack.runtime.portal!.figures().refused.authenticating_per_address).toBeGreaterThanOrEqual(190);

    // The same attack from fresh addresses, while the user opens sessions.
    const second = attack('127.0.0.3', '127.0.2.0');
    try {
      await sleep(1000);
      // Each one is a session created, attached through the portal and at its prompt within 30 s.
      for (let i = 0; i < 3; i++) await openToPrompt();
    } finally {
      second.child.kill('SIGKILL');
    }
    // The session the attackers aimed at still takes its real token.
    const shell = await openPortalShell(target.body.connect, {});
    // (Its output is read, or the channel would never end.)
    shell.channel.resume();
    shell.channel.stderr.resume();
    shell.channel.end('exit 0\n');
    expect(await shell.exitCode).toBe(0);
    shell.close();
  }, 240_000);
});
