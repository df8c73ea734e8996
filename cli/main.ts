// `essh`: the command-line client (CONTRACT §5). Progress goes to stderr, data to stdout.
import { Command, InvalidArgumentError } from 'commander';
import { EsshApi, type Session } from './api.js';
import { CliError, resolveConfig, saveConfig } from './config.js';
import { logDrainsCommand } from './log-drains.js';
import { sshToApp } from './ssh.js';

const positiveInt = (what: string) => (value: string) => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive whole number.`);
  return n;
};

const api = async () => new EsshApi(await resolveConfig());

function printJson(value: unknown) {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

function table(rows: string[][]) {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

export function buildProgram(): Command {
  const program = new Command()
    .name('essh')
    .description('Ephemeral shell sessions: a fresh container like your app\'s, with a TTY over SSH.')
    .version('0.1.0')
    .showHelpAfterError('(run essh --help for usage)');

  program
    .command('login')
    .description('store the API URL and token (in ~/.config/essh/config.json, or $ESSH_CONFIG)')
    .requiredOption('--api <url>', 'the essh API, e.g. http://127.0.0.1:3000')
    .requiredOption('--token <token>', 'your API token')
    .action(async (opts: { api: string; token: string }) => {
      let url: URL;
      try {
        url = new URL(opts.api);
      } catch {
        throw new CliError(`--api must be a URL such as http://127.0.0.1:3000 (got "${opts.api}")`);
      }
      const config = { api_url: url.toString().replace(/\/+$/, ''), token: opts.token };
      const me = await new EsshApi(config).get<{ name: string; email: string }>('/me');
      const file = await saveConfig(config);
      process.stderr.write(`Logged in to ${config.api_url} as ${me.name} <${me.email}> (saved in ${file})\n`);
    });

  program
    .command('ssh')
    .description('start a session on APP and attach to it; exits with the remote exit status')
    .argument('<app>', 'the app whose container settings the session uses')
    .argument('[command...]', 'run this instead of the app\'s shell (put it after --)')
    .option('--container-size <mb>', 'container memory in MB (default 1024)', positiveInt('--container-size'))
    .action(async (app: string, command: string[], opts: { containerSize?: number }) => {
      process.exitCode = await sshToApp(await api(), app, { containerSizeMb: opts.containerSize, command });
    });

  program
    .command('sessions')
    .description('list the sessions you may see')
    .option('--app <app>', 'only this app\'s sessions')
    .option('--json', 'print JSON')
    .action(async (opts: { app?: string; json?: boolean }) => {
      const sessions = await (await api()).list<Session>(`/sessions${opts.app ? `?app=${encodeURIComponent(opts.app)}` : ''}`);
      if (opts.json) return printJson(sessions);
      if (!sessions.length) return void process.stderr.write('No sessions.\n');
      process.stdout.write(
        table([
          ['ID', 'APP', 'STATE', 'USER', 'CREATED', 'END'],
          ...sessions.map((s) => [
            String(s.id), s.app, s.state, s.user.email, s.created_at,
            s.end_reason ? `${s.end_reason}${s.exit_code !== null ? ` (${s.exit_code})` : ''}` : '',
          ]),
        ]),
      );
    });

  program
    .command('terminate')
    .description('end a session (it ends with `terminated`)')
    .argument('<id>', 'session id', positiveInt('the session id'))
    .option('--reason <reason>', 'shown to the user and recorded')
    .action(async (id: number, opts: { reason?: string }) => {
      await (await api()).post(`/sessions/${id}/terminate`, opts.reason ? { reason: opts.reason } : {});
      process.stderr.write(`Session ${id} is being terminated.\n`);
    });

  program
    .command('operation')
    .description('show an Operation record')
    .argument('<id>', 'operation id', positiveInt('the operation id'))
    .option('--json', 'print JSON')
    .action(async (id: number, opts: { json?: boolean }) => {
      const op = await (await api()).get<Record<string, unknown>>(`/operations/${id}`);
      if (opts.json) return printJson(op);
      const shown = (v: unknown) => (v === null || v === undefined ? '-' : Array.isArray(v) ? JSON.stringify(v) : String(v));
      process.stdout.write(table(Object.entries(op).map(([k, v]) => [`${k}:`, shown(v)])));
    });

  program.addCommand(logDrainsCommand(api, { json: printJson, table }));

  return program;
}

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`essh: ${err.message}\n`);
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`essh: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
