import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import { SSH_KEY_NAMESPACE } from '../shapes/enumerations.js';
import type { SshKey } from '../shapes/answers.js';
import { resolveUserId, type EsshApi } from './api.js';
import { CliError } from './config.js';

const PUBLIC_KEY_LINE = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-\S+)\s+([A-Za-z0-9+/]+={0,3})(\s.*)?$/;

/**
 * The public key line of FILE: FILE itself when it is one (id_ed25519.pub), else FILE.pub beside the
 * private key, as ssh-keygen writes them.
 */
export async function publicKeyOf(file: string): Promise<string> {
  const read = (f: string) => readFile(f, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new CliError(err.code === 'ENOENT' ? `${f} does not exist` : `cannot read ${f}: ${err.message}`);
  });
  const lines = (text: string) => text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  let keys = lines(await read(file));
  if (!keys.every((l) => PUBLIC_KEY_LINE.test(l))) {
    keys = lines(await readFile(`${file}.pub`, 'utf8').catch(() => {
      throw new CliError(`${file} is not a public key, and there is no ${file}.pub beside it; write it with: ssh-keygen -y -f ${file} > ${file}.pub`);
    }));
  }
  if (keys.length !== 1 || !PUBLIC_KEY_LINE.test(keys[0]!)) {
    throw new CliError(`${file} holds ${keys.length} public keys; give the file of one key (e.g. ~/.ssh/id_ed25519)`);
  }
  return keys[0]!;
}

/**
 * Signs `challenge` with the key at `keyFile` (the private key, or its .pub when the private half is
 * in ssh-agent) by the system's `ssh-keygen -Y sign`, which uses ssh-agent when it holds the key and
 * asks for a passphrase on the terminal otherwise, as OpenSSH users expect. Answers the armored
 * signature.
 */
export async function signKeyChallenge(keyFile: string, challenge: string): Promise<string> {
  // Imported here, like node:crypto below: every start of the CLI builds this command, few run it.
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn('ssh-keygen', ['-Y', 'sign', '-n', SSH_KEY_NAMESPACE, '-f', keyFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', (e: NodeJS.ErrnoException) => reject(new CliError(e.code === 'ENOENT'
      ? 'ssh-keygen was not found: install OpenSSH\'s client (8.1 or later; Debian: apt-get install openssh-client) to sign with your key'
      : `cannot run ssh-keygen: ${e.message}`)));
    child.once('close', (code) => {
      if (code === 0 && out.includes('-----BEGIN SSH SIGNATURE-----')) return resolve(out);
      const said = err.split('\n').map((l) => l.trim()).filter((l) => l && !/^Signing data on standard input/.test(l)).join('; ');
      reject(new CliError(`ssh-keygen could not sign with ${keyFile}${said ? ` (${said})` : ''}; ` +
        `check the file, add the key to ssh-agent (ssh-add ${keyFile.replace(/\.pub$/, '')}), or run this in a terminal so that ssh-keygen can ask for its passphrase`));
    });
    child.stdin.on('error', () => undefined); // ssh-keygen that exits early: its status says why
    child.stdin.end(challenge);
  });
}

/**
 * Registers the key of `keyFile` for user `userId`: asks the API for a challenge, signs it with the
 * key (signKeyChallenge) and sends both. Only an essh challenge for this key and user is signed, and
 * only in essh's namespace, so that an API cannot use this to have anything else signed.
 */
export async function addKey(client: EsshApi, userId: number, keyFile: string): Promise<SshKey> {
  const publicKey = await publicKeyOf(keyFile);
  const [{ sshFingerprint }, { readKeyChallenge }] = await Promise.all([import('../lib/ssh-fingerprint.js'), import('../lib/ssh-key-challenge.js')]);
  const blob = Buffer.from(PUBLIC_KEY_LINE.exec(publicKey)![2]!, 'base64');
  const fingerprint = sshFingerprint(blob);
  const issued = await client.post<{ challenge: string; namespace: string }>(`/users/${userId}/ssh_key_challenges`, { public_key: publicKey });
  const challenge = readKeyChallenge(issued.challenge);
  if (issued.namespace !== SSH_KEY_NAMESPACE || !challenge || challenge.userId !== userId || challenge.fingerprint !== fingerprint) {
    throw new CliError(`the API at ${client.apiUrl} answered a challenge that is not one for key ${fingerprint} and user ${userId}; nothing was signed`);
  }
  const signature = await signKeyChallenge(keyFile, issued.challenge);
  return client.post<SshKey>(`/users/${userId}/ssh_keys`, { public_key: publicKey, challenge: issued.challenge, signature });
}

/** `essh keys add|list|remove` (CONTRACT §5): a user's SSH keys, for `ssh <app>@portal`. */
export function keysCommand(api: () => Promise<EsshApi>, out: {
  json: (v: unknown) => void;
  table: (rows: string[][]) => string;
  helpAfter: (cmd: Command, examples: [string, string?][]) => Command;
}): Command {
  const userOption = ['--user <user>', 'whose keys: a user id, an e-mail address or "me" (default me; account admins: a member of their account)'] as const;
  const cmd = out.helpAfter(new Command('keys').description('your SSH keys: the ones `ssh APP@portal` signs in with').helpOption('-h, --help', 'show this help'), [
    ['essh keys add ~/.ssh/id_ed25519', 'proves you hold the key by signing with ssh-keygen'],
    ['essh keys list'],
    ['essh keys remove 12'],
  ]);

  out.helpAfter(cmd
    .command('add')
    .description('register a public key; ssh-keygen signs the API\'s challenge with it (ssh-agent, or the passphrase), as proof that it is yours')
    .argument('<file>', 'the key: the private key file (its .pub beside it) or the .pub file whose private half is in ssh-agent')
    .option(...userOption)
    .option('--json', 'print the registered key as JSON')
    .action(async (file: string, opts: { user?: string; json?: boolean }) => {
      const client = await api();
      const userId = await resolveUserId(client, opts.user ?? 'me');
      const key = await addKey(client, userId, file);
      if (opts.json) return out.json(key);
      process.stderr.write(`Registered ${key.fingerprint} (key ${key.id}) for user ${userId}: ssh -p PORT APP@PORTAL signs in with it.\n`);
    }), [
    ['essh keys add ~/.ssh/id_ed25519'],
    ['essh keys add ~/.ssh/work.pub', 'a .pub whose private half is in ssh-agent'],
    ['essh keys add --user ada@example.com ./ada_ed25519', 'an account admin, for a member, holding the key'],
  ]);

  out.helpAfter(cmd
    .command('list')
    .description('list the registered SSH keys')
    .option(...userOption)
    .option('--json', 'print JSON')
    .action(async (opts: { user?: string; json?: boolean }) => {
      const client = await api();
      const userId = await resolveUserId(client, opts.user ?? 'me');
      const keys = await client.list<SshKey>(`/users/${userId}/ssh_keys`);
      if (opts.json) return out.json(keys);
      if (!keys.length) return void process.stderr.write(`User ${userId} has no SSH keys; add one with essh keys add ~/.ssh/id_ed25519\n`);
      process.stdout.write(out.table([
        ['ID', 'FINGERPRINT', 'TYPE', 'COMMENT', 'CREATED'],
        ...keys.map((k) => {
          const [type = '', , ...comment] = k.public_key.split(' ');
          return [String(k.id), k.fingerprint, type, comment.join(' '), k.created_at];
        }),
      ]));
    }), [['essh keys list'], ['essh keys list --json | jq -r \'.[].fingerprint\'']]);

  out.helpAfter(cmd
    .command('remove')
    .description('remove a registered SSH key (by its id, from essh keys list)')
    .argument('<id>', 'key id')
    .option(...userOption)
    .action(async (id: string, opts: { user?: string }) => {
      if (!/^\d+$/.test(id)) throw new CliError(`the key id must be a positive whole number (got "${id}"); see essh keys list`);
      const client = await api();
      const userId = await resolveUserId(client, opts.user ?? 'me');
      await client.delete(`/users/${userId}/ssh_keys/${id}`);
      process.stderr.write(`SSH key ${id} removed.\n`);
    }), [['essh keys remove 12']]);

  return cmd;
}
