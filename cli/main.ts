// `essh`: the command-line client (CONTRACT §5). Progress goes to stderr, data to stdout. `essh ssh`
// exits with the remote program's status, or 255 when essh itself fails (as OpenSSH does); the other
// commands exit 0, or 1 when they fail.
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { VERSION } from '../lib/version.js';
import { EsshApi, resolveUserId } from './api.js';
import { bashCompletion, zshCompletion } from './completion.js';
import { CliError, SSH_OWN_FAILURE, checkApiUrl, readStoredConfig, removeStoredToken, resolveConfig, saveConfig } from './config.js';
import { keysCommand } from './keys.js';
import { logDrainsCommand } from './log-drains.js';
import { printable, printableJson } from '../lib/printable.js';
import { SESSION_STATES } from '../shapes/enumerations.js';
import { parseLocalForward, type LocalForward } from './forward.js';
// Types only: zod stays out of the CLI's start-up. So do the modules of single commands (ssh, logs,
// watch, play, the prompts): each is imported by its command's action, so that a start loads only the
// Node built-ins (readline, streams, child_process, crypto) the command it runs needs.
import type { Session, User } from '../shapes/answers.js';

const positiveInt = (what: string) => (value: string) => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive whole number.`);
  return n;
};
const positiveNumber = (what: string) => (value: string) => {
  const n = Number(value);
  if (!/^\d*\.?\d+$/.test(value) || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${what} must be a positive number, e.g. 2 or 0.5.`);
  return n;
};

/**
 * `-e KEY=VALUE`, repeatable, into the session's extra env. Only the shape is checked here: the API
 * checks the names, with the same rule as an app's env, and answers which one is wrong.
 */
const envAssignment = (value: string, env: Record<string, string> = {}) => {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('-e takes KEY=VALUE, e.g. -e LOG_LEVEL=debug (for an empty value: -e KEY=).');
  return { ...env, [value.slice(0, eq)]: value.slice(eq + 1) };
};

/** `-L [BIND:]LOCAL:TARGET:PORT`, repeatable. */
const localForward = (value: string, list: LocalForward[] = []) => {
  const f = parseLocalForward(value);
  if (typeof f === 'string') throw new InvalidArgumentError(f);
  return [...list, f];
};

const api = async () => new EsshApi(await resolveConfig());

function printJson(value: unknown) {
  process.stdout.write(printableJson(value, 2) + '\n');
}

/** Aligned columns; every cell shown printable (they hold what users and the server wrote). */
function table(cells: string[][]) {
  const rows = cells.map((r) => r.map(printable));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

const endOf = (s: Session) => (s.end_reason ? `${s.end_reason}${s.exit_code !== null ? ` (${s.exit_code})` : ''}` : '');

function sessionsTable(sessions: Session[]) {
  return table([
    ['ID', 'APP', 'STATE', 'USER', 'CREATED', 'END'],
    ...sessions.map((s) => [String(s.id), s.app, s.state, s.user.email, s.created_at, endOf(s)]),
  ]);
}

const shown = (v: unknown) => (v === null || v === undefined || v === '' ? '-' : Array.isArray(v) ? JSON.stringify(v) : String(v));

/** Name: value lines, the names aligned. */
function fields(pairs: [string, unknown][]) {
  return table(pairs.map(([k, v]) => [`${k}:`, shown(v)]));
}

// --- help text -------------------------------------------------------------------------------------

const ENV = {
  ESSH_API_URL: 'the essh API, e.g. https://essh.example.com (over the stored login\'s)',
  ESSH_TOKEN: 'an API token (over the stored one), for CI and scripts',
  ESSH_CONFIG: 'where the login is stored (default ~/.config/essh/config.json, or under $XDG_CONFIG_HOME)',
  TERM: 'given to the session\'s program when essh ssh asks for a TTY',
} as const;
type EnvName = keyof typeof ENV;
const CONNECTION_ENV: EnvName[] = ['ESSH_API_URL', 'ESSH_TOKEN', 'ESSH_CONFIG'];

/** An Examples section and an Environment section under a command's help. */
function helpAfter(cmd: Command, examples: [string, string?][], env: EnvName[] = CONNECTION_ENV, more = ''): Command {
  const width = Math.max(...examples.map(([c]) => c.length));
  const ex = examples.map(([c, note]) => `  $ ${note ? c.padEnd(width) + '   # ' + note : c}`).join('\n');
  const envWidth = Math.max(...env.map((e) => e.length));
  const en = env.map((e) => `  ${e.padEnd(envWidth)}   ${ENV[e]}`).join('\n');
  return cmd.addHelpText('after', `\nExamples:\n${ex}\n${env.length ? `\nEnvironment:\n${en}\n` : ''}${more}`);
}

// --- the program -----------------------------------------------------------------------------------

export function buildProgram(): Command {
  const program = new Command()
    .name('essh')
    .description('Ephemeral shell sessions: a fresh container like your app\'s, with a TTY over SSH.')
    .version(VERSION, '-V, --version', 'print essh\'s version')
    .helpOption('-h, --help', 'show this help')
    .showHelpAfterError('(run essh --help for usage)');

  /** A command on one session, by its id. */
  const sessionCommand = (name: string, description: string) =>
    program.command(name).description(description).argument('<id>', 'session id', positiveInt('the session id'));

  helpAfter(program, [
    ['essh login --api https://essh.example.com', 'asks for your API token (not echoed)'],
    ['essh ssh demo', 'a shell in a fresh container like demo\'s'],
    ['essh ssh demo -- rake db:migrate; echo $?', 'a command; essh exits with its status'],
    ['essh sessions --state active --watch', 'follow the sessions until Ctrl-C'],
    ['essh watch 42', 'follow session 42\'s terminal, read-only'],
    ['essh recording 42 --play', 'replay session 42 in this terminal'],
    ['essh keys add ~/.ssh/id_ed25519', 'then ssh APP@portal signs in with that key'],
    ['source <(essh completion bash)', 'Tab completion (zsh: essh completion zsh)'],
  ], ['ESSH_API_URL', 'ESSH_TOKEN', 'ESSH_CONFIG', 'TERM'], `
Exit status:
  essh ssh exits with the remote program's status, or 255 when essh itself fails (the API refused,
  the portal could not be reached, …), as ssh does. The other commands exit 0, or 1 when they fail.
`);

  // login / logout / whoami ------------------------------------------------------------------------

  helpAfter(program
    .command('login')
    .description('check an API token and store it with the API URL (0600, in $ESSH_CONFIG or ~/.config/essh/config.json)')
    .option('--api <url>', 'the essh API (default: $ESSH_API_URL, else the one stored by the last login)')
    .option('--token-stdin', 'read the token from stdin (e.g. from a secret store) instead of asking for it')
    .addOption(new Option('--token <token>', 'deprecated: the token on the command line lands in shell history and ps; use the prompt or --token-stdin')
      .conflicts('tokenStdin'))
    .action(async (opts: { api?: string; token?: string; tokenStdin?: boolean }) => {
      const stored = await readStoredConfig();
      const apiArg = opts.api ?? process.env.ESSH_API_URL ?? stored.api_url;
      if (!apiArg) throw new CliError('name the essh API: essh login --api URL (e.g. http://127.0.0.1:3000), or set ESSH_API_URL');
      let url: URL;
      try {
        url = new URL(apiArg);
      } catch {
        throw new CliError(`--api must be a URL such as http://127.0.0.1:3000 (got "${apiArg}")`);
      }
      const api_url = checkApiUrl(url.toString());
      let token: string;
      if (opts.token !== undefined) {
        process.stderr.write('essh: warning: --token leaves the token in your shell history and in ps; next time let essh login ask for it, or use --token-stdin\n');
        token = opts.token;
      } else if (opts.tokenStdin) {
        token = await (await import('./prompt.js')).readStdin();
      } else {
        if (!process.stdin.isTTY) throw new CliError('no terminal to ask for the token on: pipe it in with --token-stdin (e.g. essh login --token-stdin < token-file)');
        process.stderr.write(`Logging in to ${api_url}.\n`);
        token = (await (await import('./prompt.js')).promptHidden('API token: ')).trim();
      }
      if (!token) throw new CliError('no token given; nothing was stored');
      const me = await new EsshApi({ api_url, token }).get<User>('/me');
      const file = await saveConfig({ ...stored, api_url, token });
      process.stderr.write(`Logged in to ${api_url} as ${printable(`${me.name} <${me.email}>`)} (saved in ${file})\n`);
      if (process.env.ESSH_TOKEN) process.stderr.write('essh: note: ESSH_TOKEN is set in this environment and is used instead of the stored token\n');
    }), [
    ['essh login --api http://127.0.0.1:3000', 'asks for the token; nothing is echoed'],
    ['essh login --token-stdin < ~/.essh-token', 'from a file or a secret store, never on the command line'],
    ['pass show essh | essh login --api https://essh.example.com --token-stdin'],
  ], ['ESSH_API_URL', 'ESSH_CONFIG']);

  helpAfter(program
    .command('logout')
    .description('forget the stored API token (the API URL stays, so `essh login` needs no --api next time)')
    .action(async () => {
      const { file, hadToken } = await removeStoredToken();
      process.stderr.write(hadToken ? `Logged out: the token is removed from ${file}.\n` : `Not logged in (no token in ${file}).\n`);
      if (process.env.ESSH_TOKEN) process.stderr.write('essh: note: ESSH_TOKEN is still set in this environment, and essh still uses it\n');
    }), [['essh logout']], ['ESSH_CONFIG']);

  helpAfter(program
    .command('whoami')
    .description('show who the API token belongs to: user, role, accounts, and the API it is used with')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const config = await resolveConfig();
      const me = await new EsshApi(config).get<User>('/me');
      if (opts.json) return printJson({ ...me, api_url: config.api_url, token_from: config.source.token });
      process.stdout.write(fields([
        ['user', `${me.name} <${me.email}> (id ${me.id})`],
        ['role', me.role],
        ['accounts', me.accounts.join(', ') || '(none)'],
        ['api', config.api_url + (config.source.api_url === 'ESSH_API_URL' ? ' (from ESSH_API_URL)' : '')],
        ['token from', config.source.token],
      ]));
    }), [['essh whoami'], ['ESSH_TOKEN=… essh whoami --json', 'which user a CI token is']]);

  // ssh ---------------------------------------------------------------------------------------------

  const ssh = helpAfter(program
    .command('ssh')
    .description('start a session on APP and attach to it; exits with the remote exit status (255: essh itself failed)')
    .argument('<app>', 'the app whose container settings the session uses')
    .argument('[command...]', 'run this instead of the app\'s shell (put it after --)')
    .option('--container-size <mb>', 'container memory in MB (default 1024)', positiveInt('--container-size'))
    .option('-e, --env <KEY=VALUE>', 'an environment variable for this session only, over the app\'s (repeatable; never shown back)', envAssignment)
    .option('-t, --tty', 'ask for a TTY even without a local terminal (ssh -t)')
    .option('-T, --no-tty', 'never ask for a TTY: plain stdin, stdout and stderr (ssh -T)')
    .option('-L, --local-forward <[BIND:]LOCAL:TARGET:PORT>', 'forward a local port to TARGET:PORT as the session\'s container reaches it, while the session lasts (repeatable; ssh -L)', localForward)
    .addHelpText('after', `
Without -t or -T, a TTY is asked for when stdin and stdout are both a terminal.`)
    .action(async (app: string, command: string[], opts: { containerSize?: number; env?: Record<string, string>; tty?: boolean; localForward?: LocalForward[] }) => {
      try {
        const { sshToApp } = await import('./ssh.js');
        process.exitCode = await sshToApp(await api(), app, {
          containerSizeMb: opts.containerSize, env: opts.env, command, tty: opts.tty, forwards: opts.localForward,
        });
      } catch (err) {
        throw new CliError((err as Error).message, SSH_OWN_FAILURE);
      }
    }), [
    ['essh ssh demo', 'an interactive shell'],
    ['essh ssh demo -- sh -c \'exit 3\'; echo $?', '3; essh\'s own failures are 255'],
    ['essh ssh demo -e LOG_LEVEL=debug -- rake db:migrate', 'extra env for this session only'],
    ['essh ssh -t demo -- ls --color=auto | less -R', 'a remote TTY without a local one'],
    ['essh ssh -T demo -- tar c /app > app.tar', 'binary output: no TTY'],
    ['essh ssh demo -L 5432:db.internal:5432', 'the app\'s database on localhost:5432 while the shell lasts'],
  ], ['ESSH_API_URL', 'ESSH_TOKEN', 'ESSH_CONFIG', 'TERM']);

  helpAfter(program
    .command('cp')
    .description('copy one file into or out of a new session\'s container of APP (SFTP through the portal, as the container\'s user); the session ends after the copy')
    .argument('<source>', 'APP:PATH (from the container) or a local file')
    .argument('<dest>', 'a local path, or APP:PATH (into the container; a relative PATH is from the app\'s working directory)')
    .action(async (source: string, dest: string) => {
      const { planCopy, copyFile } = await import('./cp.js');
      const done = await copyFile(await api(), planCopy(source, dest));
      process.stderr.write(`${done.bytes} bytes copied to ${printable(done.to)} (session ${done.session})\n`);
    }), [
    ['essh cp demo:/app/log/production.log ./', 'a file out of the app\'s image'],
    ['essh cp ./seed.sql demo:/tmp/', 'a file into a new session\'s container'],
  ], ['ESSH_API_URL', 'ESSH_TOKEN', 'ESSH_CONFIG']);

  helpAfter(program
    .command('run')
    .description('run a command on APP as a detached job: it starts at once, with no client, and this prints its session id')
    .argument('<app>', 'the app whose container settings the job uses')
    .argument('<command...>', 'the command to run (put it after --)')
    .requiredOption('--detach', 'run without a client (the only way essh run runs, for now); follow it with essh logs -f ID')
    .option('--container-size <mb>', 'container memory in MB (default 1024)', positiveInt('--container-size'))
    .option('-e, --env <KEY=VALUE>', 'an environment variable for this job only, over the app\'s (repeatable; never shown back)', envAssignment)
    .action(async (app: string, command: string[], opts: { containerSize?: number; env?: Record<string, string> }) => {
      const { runDetached } = await import('./logs.js');
      const s = await runDetached(await api(), app, { command, container_size_mb: opts.containerSize, env: opts.env });
      process.stdout.write(`${s.id}\n`);
      if (process.stderr.isTTY) process.stderr.write(`Session ${s.id} runs detached; follow it with: essh logs -f ${s.id}\n`);
    }), [
    ['essh run --detach demo -- rake db:migrate', 'prints the session id'],
    ['id=$(essh run --detach demo -- ./batch.sh) && essh logs -f "$id"', 'exits with the job\'s exit code'],
  ]);

  helpAfter(sessionCommand('logs', 'a session\'s output so far (-f: follow it live until it ends, then exit with its exit code)')
    .option('-f, --follow', 'print new output as it comes until the session ends; exit with the program\'s exit code (1 if it ended another way)')
    .option('--interval <seconds>', 'with -f: how often to look for new output', positiveNumber('--interval'), 2.5)
    .action(async (id: number, opts: { follow?: boolean; interval: number }) => {
      const { printLogs } = await import('./logs.js');
      process.exitCode = await printLogs(await api(), id, { follow: Boolean(opts.follow), intervalMs: opts.interval * 1000 });
    }), [
    ['essh logs 42', 'what session 42 printed so far'],
    ['essh logs -f 42; echo $?', 'follow a detached job; its exit code'],
  ]);

  // sessions ----------------------------------------------------------------------------------------

  helpAfter(sessionCommand('session', 'show one session')
    .option('--json', 'print JSON')
    .action(async (id: number, opts: { json?: boolean }) => {
      const s = await (await api()).get<Session>(`/sessions/${id}`);
      if (opts.json) return printJson(s);
      process.stdout.write(fields([
        ['id', s.id], ['app', s.app], ['account', s.account], ['state', s.state],
        ['user', `${s.user.name} <${s.user.email}>`],
        ['command', s.command ? s.command.join(' ') : '(the app\'s shell)'],
        ['container size', `${s.container_size_mb} MB`], ['container', s.container_id],
        ['created', s.created_at], ['connected', s.connected_at], ['ended', s.ended_at],
        ['end reason', s.end_reason], ['exit code', s.exit_code], ['end message', s.end_message], ['ended by', s.ended_by],
        ['expires', s.expires_at],
      ]));
    }), [['essh session 42'], ['essh session 42 --json | jq -r .state']]);

  helpAfter(program
    .command('sessions')
    .description('list the sessions you may see (--watch: follow the list until Ctrl-C; essh watch ID follows one session\'s terminal)')
    .option('--app <app>', 'only this app\'s sessions')
    .addOption(new Option('--state <state>', 'only sessions in this state').choices(SESSION_STATES))
    .option('--user <user>', 'only this user\'s sessions: a user id, an e-mail address, or "me"')
    .option('-w, --watch', 'list again every --interval seconds and show what changed, until Ctrl-C')
    .option('--interval <seconds>', 'how often --watch lists', positiveNumber('--interval'), 2)
    .option('--json', 'print JSON (with --watch: one JSON object per line, per change)')
    .action(async (opts: { app?: string; state?: string; user?: string; watch?: boolean; interval: number; json?: boolean }) => {
      const client = await api();
      const user = opts.user === undefined ? undefined : await resolveUserId(client, opts.user);
      const fetch = () => client.list<Session>('/sessions', { app: opts.app, state: opts.state, user });
      if (opts.watch) {
        const title = ['essh sessions', opts.app && `--app ${opts.app}`, opts.state && `--state ${opts.state}`, opts.user && `--user ${opts.user}`].filter(Boolean).join(' ');
        const { watchSessions } = await import('./watch.js');
        return watchSessions(client, fetch, {
          intervalMs: opts.interval * 1000, json: Boolean(opts.json), redraw: Boolean(process.stdout.isTTY) && !opts.json, title, table: sessionsTable,
        });
      }
      const sessions = await fetch();
      if (opts.json) return printJson(sessions);
      if (!sessions.length) return void process.stderr.write('No sessions.\n');
      process.stdout.write(sessionsTable(sessions));
    }), [
    ['essh sessions --app demo'],
    ['essh sessions --state active --user me'],
    ['essh sessions --app demo --watch', 'a table redrawn every 2 s, changes under it'],
    ['essh sessions --watch --json | jq -c \'{id,state}\'', 'one JSON line per change'],
  ]);

  helpAfter(sessionCommand('watch', 'follow one live session\'s terminal read-only as it happens (its owner, an account admin or an operator); not to be confused with essh sessions --watch, which follows the list')
    .addHelpText('after', `
You see the last screenful the session printed, then its output live; nothing you type reaches it,
and its user is told that you are watching. Ctrl-C stops watching; watching also ends with the session.
Exit status: 0 once watching ended, 1 when the session may not be watched (it is not live, not yours…).`)
    .action(async (id: number) => {
      const { watchSession } = await import('./observe.js');
      process.exitCode = await watchSession(await api(), id);
    }), [
    ['essh watch 42', 'what session 42 shows, live, until it ends or Ctrl-C'],
    ['essh sessions --state active --watch', 'the list of live sessions instead, followed until Ctrl-C'],
  ]);

  helpAfter(sessionCommand('terminate', 'end a session (it ends with `terminated`)')
    .option('--reason <reason>', 'shown to the user and recorded')
    .action(async (id: number, opts: { reason?: string }) => {
      await (await api()).post(`/sessions/${id}/terminate`, opts.reason ? { reason: opts.reason } : {});
      process.stderr.write(`Session ${id} is being terminated.\n`);
    }), [['essh terminate 42 --reason "maintenance at 18:00"']]);

  helpAfter(sessionCommand('recording', 'a session\'s terminal recording: asciicast v2 on stdout, or --play it in this terminal')
    .option('--play', 'replay it here at its timing, like asciinema play (space pauses, Ctrl-C or q stops)')
    .option('--speed <factor>', 'with --play: 2 plays twice as fast, 0.5 at half speed', positiveNumber('--speed'), 1)
    .option('--idle-limit <seconds>', 'with --play: cut longer pauses to this many seconds', positiveNumber('--idle-limit'))
    .action(async (id: number, opts: { play?: boolean; speed: number; idleLimit?: number }) => {
      const res = await (await api()).stream(`/sessions/${id}/recording`);
      if (opts.play) {
        const { playRecording } = await import('./play.js');
        process.exitCode = await playRecording(res, { speed: opts.speed, idleLimitS: opts.idleLimit });
        return;
      }
      if (process.stdout.isTTY) process.stderr.write(`(asciicast v2: save it with > session-${id}.cast, or watch it with essh recording ${id} --play)\n`);
      res.pipe(process.stdout, { end: false });
      await (await import('node:stream/promises')).finished(res);
    }), [
    ['essh recording 42 > session-42.cast', 'asciinema play session-42.cast plays it too'],
    ['essh recording 42 --play --speed 2 --idle-limit 1'],
  ]);

  helpAfter(program
    .command('operation')
    .description('show an Operation record')
    .argument('<id>', 'operation id', positiveInt('the operation id'))
    .option('--json', 'print JSON')
    .action(async (id: number, opts: { json?: boolean }) => {
      const op = await (await api()).get<Record<string, unknown>>(`/operations/${id}`);
      if (opts.json) return printJson(op);
      process.stdout.write(fields(Object.entries(op)));
    }), [['essh operation 42'], ['essh operation 42 --json']]);

  program.addCommand(logDrainsCommand(api, { json: printJson, table, helpAfter }));
  program.addCommand(keysCommand(api, { json: printJson, table, helpAfter }));

  helpAfter(program
    .command('completion')
    .description('print a bash or zsh completion script, made from this program so it never drifts')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .action((shell: string) => {
      process.stdout.write(shell === 'zsh' ? zshCompletion(program) : bashCompletion(program));
    }), [
    ['source <(essh completion bash)', 'in ~/.bashrc'],
    ['source <(essh completion zsh)', 'in ~/.zshrc, after compinit'],
    ['essh completion zsh > "${fpath[1]}/_essh"', 'or installed once'],
  ], []);

  // Usage errors end like the command's other failures: `essh ssh`'s with 255.
  const overrideExits = (cmd: Command, code?: number) => {
    cmd.exitOverride((err) => {
      throw code !== undefined && err.exitCode !== 0 ? new CommanderError(code, err.code, err.message) : err;
    });
    for (const sub of cmd.commands) overrideExits(sub, sub === ssh ? SSH_OWN_FAILURE : code);
  };
  overrideExits(program);
  return program;
}

export async function main(argv = process.argv): Promise<void> {
  // `essh recording 42 | head`: a reader that goes away is no error of essh's.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed its message (or the help) already.
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`essh: ${printable((err as Error).message)}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  }
}

