// Registering an SSH key takes proof of holding its private key (issue 18): without it a user could
// register a colleague's published key and own every session the colleague opens with `ssh <app>@portal`.
// Keys, signatures and logins are the real ssh-keygen's, ssh-agent's and ssh's; the CLI is the real bin.
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';
import { issueKeyChallenge } from '../lib/ssh-key-challenge.js';
import { SSH_KEY_NAMESPACE } from '../shapes/enumerations.js';
import { createTenant, useTestStack, waitFor, waitForState } from './support/harness.js';
import { Terminal, generateKey, keyOnly, q, run, runToEnd, sshArgs } from './support/portal-terminal.js';

const ESSH = path.join(projectRoot, 'bin', 'essh.js');
type Tenant = Awaited<ReturnType<typeof createTenant>>;
type Key = Awaited<ReturnType<typeof generateKey>>;

const stack = useTestStack();
let dir: string;
/** Alice and Bob: members of two accounts; Carol: Alice's fellow member. */
let alice: Tenant;
let bob: Tenant;
let carol: { id: number; token: string };
let agent: ChildProcess | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'essh-key-proof-'));
  alice = await createTenant(stack);
  bob = await createTenant(stack);
  const c = await stack.api.post('/users', stack.adminToken, { name: 'Carol', email: `carol-${alice.account}@example.com`, role: 'member', accounts: [alice.account] });
  expect(c.status).toBe(201);
  carol = { id: c.body.id, token: c.body.token };
}, 120_000);
afterAll(async () => {
  agent?.kill();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const challengeFor = async (userId: number, token: string, publicKey: string) => {
  const r = await stack.api.post(`/users/${userId}/ssh_key_challenges`, token, { public_key: publicKey });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as { challenge: string; namespace: string; fingerprint: string; expires_at: string };
};
/** ssh-keygen -Y sign of `text`, as a user would run it (any namespace). */
const sign = async (keyFile: string, text: string, namespace = SSH_KEY_NAMESPACE) => {
  const r = await runToEnd('ssh-keygen', ['-Y', 'sign', '-n', namespace, '-f', keyFile], { input: text });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.toString();
};
const register = (userId: number, token: string, body: Record<string, unknown>) => stack.api.post(`/users/${userId}/ssh_keys`, token, body);
const keysOf = async (userId: number) => (await stack.api.listAll<{ fingerprint: string }>(`/users/${userId}/ssh_keys`, stack.adminToken)).map((k) => k.fingerprint);
const fingerprintOf = async (key: Key) => (await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${key.keyFile}.pub`])).stdout.split(/\s+/)[1]!;

/** The essh CLI as a user runs it, with the API and token from the environment. */
const essh = (args: string[], token: string, env: Record<string, string> = {}) =>
  runToEnd(process.execPath, [ESSH, ...args], {
    env: { ...process.env, ESSH_API_URL: stack.url, ESSH_TOKEN: token, ESSH_CONFIG: path.join(dir, 'no-config.json'), ...env },
    timeoutMs: 60_000,
  });

function expectRefused(r: { status: number; body: any }, message: RegExp) {
  expect(r.status, JSON.stringify(r.body)).toBe(422);
  expect(r.body).toMatchObject({ error: 'invalid_request', message: expect.stringMatching(message) });
}

describe('POST /users/{id}/ssh_keys takes the key\'s signature of a challenge for this user and key', () => {
  it('the challenge names the user, the key, the namespace and when it expires', async () => {
    const key = await generateKey(dir, 'shape');
    const c = await challengeFor(alice.user.id, alice.token, key.publicKey);
    expect(c.namespace).toBe('essh-key-registration');
    expect(c.fingerprint).toBe(await fingerprintOf(key));
    expect(c.challenge).toMatch(new RegExp(`^essh-key-registration v1 user=${alice.user.id} key=${c.fingerprint.replace(/[+/]/g, '\\$&')} `));
    const lasts = Date.parse(c.expires_at) - Date.now();
    expect(lasts).toBeGreaterThan(4 * 60_000);
    expect(lasts).toBeLessThanOrEqual(5 * 60_000);
  });

  it('refuses a key without a signature, or with something that is not one, and says how to sign', async () => {
    const key = await generateKey(dir, 'unsigned');
    const c = await challengeFor(alice.user.id, alice.token, key.publicKey);
    const none = await register(alice.user.id, alice.token, { public_key: key.publicKey });
    expect(none.status).toBe(422);
    expect(none.body.problems.join('\n')).toMatch(/body\.challenge/);
    expect(none.body.problems.join('\n')).toMatch(/body\.signature/);
    expectRefused(await register(alice.user.id, alice.token, { public_key: key.publicKey, challenge: c.challenge, signature: 'trust me' }),
      /not an armored SSH signature.*ssh-keygen -Y sign -n essh-key-registration.*essh keys add/);
    expect(await keysOf(alice.user.id)).not.toContain(c.fingerprint);
  });

  it('refuses a signature made by another key, for another namespace, over another text, or over a challenge for another key', async () => {
    const key = await generateKey(dir, 'target');
    const other = await generateKey(dir, 'other');
    const c = await challengeFor(alice.user.id, alice.token, key.publicKey);
    const body = (signature: string) => ({ public_key: key.publicKey, challenge: c.challenge, signature });
    expectRefused(await register(alice.user.id, alice.token, body(await sign(other.keyFile, c.challenge))),
      new RegExp(`made by another key \\(${(await fingerprintOf(other)).replace(/[+/]/g, '\\$&')}\\)`));
    expectRefused(await register(alice.user.id, alice.token, body(await sign(key.keyFile, c.challenge, 'file'))), /namespace "file", not "essh-key-registration"/);
    expectRefused(await register(alice.user.id, alice.token, body(await sign(key.keyFile, `${c.challenge} and more`))), /does not verify over the challenge/);
    // A challenge issued for another key, signed by this one.
    const forOther = await challengeFor(alice.user.id, alice.token, other.publicKey);
    expectRefused(await register(alice.user.id, alice.token, { public_key: key.publicKey, challenge: forOther.challenge, signature: await sign(key.keyFile, forOther.challenge) }),
      /issued for key SHA256:.*not for this public_key/);
    expect(await keysOf(alice.user.id)).not.toContain(c.fingerprint);
  });

  it('refuses another user\'s challenge, an altered one and an expired one', async () => {
    const key = await generateKey(dir, 'replayed');
    // Alice's complete, valid proof, replayed by Bob for himself.
    const mine = await challengeFor(alice.user.id, alice.token, key.publicKey);
    const proof = { public_key: key.publicKey, challenge: mine.challenge, signature: await sign(key.keyFile, mine.challenge) };
    expectRefused(await register(bob.user.id, bob.token, proof), new RegExp(`issued for user ${alice.user.id}, not user ${bob.user.id}`));
    // The same challenge with its user changed: its MAC no longer holds.
    const altered = mine.challenge.replace(`user=${alice.user.id} `, `user=${bob.user.id} `);
    expectRefused(await register(bob.user.id, bob.token, { ...proof, challenge: altered, signature: await sign(key.keyFile, altered) }),
      /not issued by this essh installation, or was altered/);
    // A challenge this installation issued six minutes ago (its secrets key, the clock moved back): expired.
    const old = issueKeyChallenge(stack.runtime.secrets, alice.user.id, mine.fingerprint, Date.now() - 6 * 60_000).challenge;
    expectRefused(await register(alice.user.id, alice.token, { ...proof, challenge: old, signature: await sign(key.keyFile, old) }), /expired at .*ask for a new one/);
    // And the genuine proof still does, for Alice.
    expect((await register(alice.user.id, alice.token, proof)).status).toBe(201);
  });

  it('accepts ed25519, ECDSA (P-256, P-384, P-521) and RSA keys, the challenge signed with or without its newline', async () => {
    for (const [type, bits] of [['ed25519', ''], ['ecdsa', '256'], ['ecdsa', '384'], ['ecdsa', '521'], ['rsa', '2048']]) {
      const keyFile = path.join(dir, `typed-${type}${bits}`);
      await run('ssh-keygen', ['-q', '-t', type!, ...(bits ? ['-b', bits] : []), '-N', '', '-f', keyFile]);
      const publicKey = (await run('cat', [`${keyFile}.pub`])).stdout.trim();
      const c = await challengeFor(alice.user.id, alice.token, publicKey);
      // `jq -r .challenge | ssh-keygen -Y sign …` signs the line with its newline.
      const text = type === 'rsa' ? `${c.challenge}\n` : c.challenge;
      const r = await register(alice.user.id, alice.token, { public_key: publicKey, challenge: c.challenge, signature: await sign(keyFile, text) });
      expect(r.status, `${type} ${bits}: ${JSON.stringify(r.body)}`).toBe(201);
      expect(r.body.fingerprint).toBe(c.fingerprint);
    }
  });

  it('refuses security-key (sk-…) keys, which the portal cannot verify, saying which keys to use', async () => {
    const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
    const blob = Buffer.concat([str(Buffer.from('sk-ssh-ed25519@openssh.com')), str(Buffer.alloc(32, 7)), str(Buffer.from('ssh:'))]);
    const r = await stack.api.post(`/users/${alice.user.id}/ssh_key_challenges`, alice.token, { public_key: `sk-ssh-ed25519@openssh.com ${blob.toString('base64')} yubikey` });
    expectRefused(r, /Security-key .* Register an ed25519, ECDSA or RSA key/);
  });
});

describe('the attack: Bob registers Alice\'s published public key to own her portal sessions', () => {
  let aliceKey: Key;
  beforeAll(async () => {
    aliceKey = await generateKey(dir, 'alice');
  });

  it('is refused whatever Bob signs with, and tells Bob nothing about whether the key is registered', async () => {
    const bobKey = await generateKey(dir, 'bob');
    for (const [thief, userId, token] of [['Bob', bob.user.id, bob.token], ['Carol', carol.id, carol.token]] as const) {
      // The API gives anyone a challenge for their own user and any public key: only the signature proves.
      const c = await challengeFor(userId, token, aliceKey.publicKey);
      const attempts = [
        { public_key: aliceKey.publicKey, challenge: c.challenge, signature: await sign(bobKey.keyFile, c.challenge) },
        { public_key: aliceKey.publicKey, challenge: c.challenge, signature: '-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n' },
      ];
      for (const body of attempts) expect((await register(userId, token, body)).status, thief).toBe(422);
    }
    expect(await keysOf(bob.user.id)).toEqual([]);
    expect(await keysOf(carol.id)).toEqual([]);
    // Alice's key, unregistered, opens nothing at the portal.
    const denied = await runToEnd('ssh', [...sshArgs(stack.runtime.sshPort!, keyOnly(aliceKey.keyFile)), `${bob.app}@127.0.0.1`, 'true'], { timeoutMs: 30_000 });
    expect(denied.code).toBe(255);
    expect(denied.stderr).toMatch(/Permission denied/);
  });

  it('Alice registers her key with `essh keys add` (ssh-keygen signs), and her `ssh <app>@portal` sessions are hers alone', async () => {
    const added = await essh(['keys', 'add', aliceKey.keyFile, '--json'], alice.token);
    expect(added.code, added.stderr).toBe(0);
    const key = JSON.parse(added.stdout.toString());
    expect(key.fingerprint).toBe(await fingerprintOf(aliceKey));
    expect(await keysOf(alice.user.id)).toContain(key.fingerprint);

    const r = await runToEnd('ssh', [...sshArgs(stack.runtime.sshPort!, keyOnly(aliceKey.keyFile)), `${alice.app}@127.0.0.1`, 'echo "mine-$((6*7))"'], { timeoutMs: 60_000 });
    expect(r.stdout.toString(), r.stderr).toBe('mine-42\n');
    expect(r.code).toBe(0);
    const sessions = (await stack.api.get(`/sessions?app=${alice.app}`, alice.token)).body.items as { id: number; user: { id: number } }[];
    const s = sessions.find((x) => x.user.id === alice.user.id)!;
    expect(s).toBeDefined();
    await waitForState(stack, alice.token, s.id, 'ended', 30_000);
    // Bob sees neither the session nor its recording.
    expect((await stack.api.get(`/sessions/${s.id}`, bob.token)).status).toBe(404);
    expect((await stack.api.get(`/sessions/${s.id}/recording`, bob.token)).status).toBe(404);

    // Bob asks again now that the key is registered: still 422 (no proof), not 409, so the API does
    // not tell him that essh knows this key.
    const c = await challengeFor(bob.user.id, bob.token, aliceKey.publicKey);
    const again = await register(bob.user.id, bob.token, { public_key: aliceKey.publicKey, challenge: c.challenge, signature: await sign((await generateKey(dir, 'bob2')).keyFile, c.challenge) });
    expect(again.status).toBe(422);
  });
});

describe('essh keys', () => {
  it('add signs through ssh-agent when given only the .pub; list shows the key; remove removes it', async () => {
    const key = await generateKey(dir, 'agent-only');
    const socket = path.join(dir, 'agent.sock');
    agent = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
    const env = { SSH_AUTH_SOCK: socket };
    await waitFor('ssh-agent to listen', async () => (await runToEnd('ssh-add', ['-l'], { env: { ...process.env, ...env } })).code === 1, 10_000);
    expect((await runToEnd('ssh-add', [key.keyFile], { env: { ...process.env, ...env } })).code).toBe(0);
    // Only the agent holds the private key now.
    await unlink(key.keyFile);
    const added = await essh(['keys', 'add', `${key.keyFile}.pub`], carol.token, env);
    expect(added.code, added.stderr).toBe(0);
    expect(added.stderr).toMatch(/^Registered SHA256:\S+ \(key \d+\) for user \d+/);

    const list = await essh(['keys', 'list'], carol.token);
    expect(list.code, list.stderr).toBe(0);
    const fingerprint = await fingerprintOf(key);
    const row = list.stdout.toString().split('\n').find((l) => l.includes(fingerprint))!;
    expect(row).toMatch(new RegExp(`^\\d+\\s+SHA256:\\S+\\s+ssh-ed25519\\s+essh-test-agent-only\\s`));
    const id = row.split(/\s+/)[0]!;

    const removed = await essh(['keys', 'remove', id], carol.token);
    expect(removed.code, removed.stderr).toBe(0);
    expect(await keysOf(carol.id)).not.toContain(fingerprint);
  });

  it('add asks for a passphrase on the terminal (ssh-keygen\'s prompt) when no agent holds the key', async () => {
    const keyFile = path.join(dir, 'with-passphrase');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'correct horse', '-C', 'with-passphrase', '-f', keyFile]);
    const [config, agent] = [path.join(dir, 'no-config.json'), path.join(dir, 'no-agent.sock')];
    const term = await Terminal.start(`ESSH_API_URL=${q(stack.url)} ESSH_TOKEN=${q(carol.token)} ESSH_CONFIG=${q(config)} SSH_AUTH_SOCK=${q(agent)} ${q(process.execPath)} ${q(ESSH)} keys add ${q(keyFile)}`);
    try {
      await term.waitForText(/Enter passphrase/);
      await term.typeLine('correct horse');
      await term.waitForText(/Registered SHA256:\S+ \(key \d+\)/);
      expect(await term.exitStatus()).toBe(0);
    } finally {
      await term.stop();
    }
    expect(await keysOf(carol.id)).toContain(await fingerprintOf({ keyFile, publicKey: '' }));
  });

  it('says what to do when the key cannot sign', async () => {
    // The .pub alone, without the private key or an agent that holds it.
    const key = await generateKey(dir, 'no-private');
    await unlink(key.keyFile);
    const r = await essh(['keys', 'add', `${key.keyFile}.pub`], carol.token, { SSH_AUTH_SOCK: path.join(dir, 'no-agent.sock') });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/ssh-keygen could not sign with .*no-private\.pub.*ssh-add/);
  });

  it('signs nothing an API sends that is not an essh challenge for this key and user', async () => {
    // An API that wants a git commit signed with the user's key.
    const posted: string[] = [];
    const evil = http.createServer((req, res) => {
      posted.push(`${req.method} ${req.url}`);
      res.setHeader('content-type', 'application/json');
      if (req.url === '/me') return res.end(JSON.stringify({ id: 5, name: 'x', email: 'x@example.com', role: 'member', accounts: [] }));
      res.end(JSON.stringify({ challenge: 'tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nfix', namespace: 'git', fingerprint: 'SHA256:x', expires_at: new Date().toISOString() }));
    });
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
    try {
      const key = await generateKey(dir, 'wary');
      const r = await essh(['keys', 'add', key.keyFile], 'essh_whatever', { ESSH_API_URL: `http://127.0.0.1:${(evil.address() as AddressInfo).port}` });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/answered a challenge that is not one for key SHA256:\S+ and user 5; nothing was signed/);
      expect(posted).toEqual(['GET /me', 'POST /users/5/ssh_key_challenges']);
    } finally {
      evil.close();
    }
  });
});
