import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { createTenant, useTestStack } from './support/harness.js';

const run = promisify(execFile);
const ESSH = path.join(projectRoot, 'bin', 'essh.js');

const stack = useTestStack();

async function essh(args: string[], token: string) {
  try {
    const { stdout, stderr } = await run(process.execPath, [ESSH, ...args], {
      env: { ...process.env, ESSH_API_URL: stack.url, ESSH_TOKEN: token, ESSH_CONFIG: '/nonexistent/essh.json' },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('essh log-drains (the real CLI against the real API)', () => {
  it('creates, lists and deletes a drain; refusals are one line', async () => {
    const t = await createTenant(stack);
    const admin = stack.adminToken;
    const created = await essh(['log-drains', 'create', t.account, '--handle', 'collector', '--type', 'https',
      '--url', 'https://user:secret@127.0.0.1:9/ingest', '--json'], admin);
    expect(created.code, created.stderr).toBe(0);
    const drain = JSON.parse(created.stdout);
    expect(drain).toMatchObject({ handle: 'collector', drain_type: 'https', drain_ephemeral_sessions: true });
    expect(created.stdout).not.toContain('secret');

    const listed = await essh(['log-drains', 'list', t.account], admin);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`^${drain.id}\\s+collector\\s+https`, 'm'));

    // A member may list but not create; the refusal is the API's sentence on one line.
    const member = await essh(['log-drains', 'create', t.account, '--handle', 'x', '--type', 'https', '--url', 'https://127.0.0.1:9/'], t.token);
    expect(member.code).toBe(1);
    expect(member.stderr.trim().split('\n')).toHaveLength(1);
    expect(member.stderr).toMatch(/^essh: /);

    const bad = await essh(['log-drains', 'create', t.account, '--handle', 'y', '--type', 'syslog', '--url', 'syslog://127.0.0.1:514'], admin);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/syslog\+tls:\/\//);

    const deleted = await essh(['log-drains', 'delete', String(drain.id)], admin);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect((await essh(['log-drains', 'list', t.account, '--json'], admin)).stdout.trim()).toBe('[]');
  });
});
