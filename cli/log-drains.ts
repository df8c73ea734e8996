import { readFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import type { EsshApi } from './api.js';
import { CliError } from './config.js';
import { printable } from '../lib/printable.js';
import type { Drain } from '../shapes/answers.js';

/** `essh log-drains list|create|delete` (CONTRACT §5, §9): thin over the drains routes. */
export function logDrainsCommand(api: () => Promise<EsshApi>, out: {
  json: (v: unknown) => void;
  table: (rows: string[][]) => string;
  helpAfter: (cmd: Command, examples: [string, string?][]) => Command;
}): Command {
  const cmd = out.helpAfter(new Command('log-drains').description("manage an account's log drains").helpOption('-h, --help', 'show this help'), [
    ['essh log-drains list acme'],
    ['essh log-drains create acme --handle siem --type syslog --url syslog+tls://logs.example.com:6514'],
    ['essh log-drains resume 7', 'after fixing its receiver'],
  ]);

  out.helpAfter(cmd
    .command('list')
    .description("list an account's log drains with their delivery state")
    .argument('<account>', 'account handle')
    .option('--json', 'print JSON')
    .action(async (account: string, opts: { json?: boolean }) => {
      const drains = await (await api()).list<Drain>(`/accounts/${encodeURIComponent(account)}/log_drains`);
      if (opts.json) return out.json(drains);
      if (!drains.length) return void process.stderr.write(`Account ${printable(account)} has no log drains.\n`);
      process.stdout.write(out.table([
        ['ID', 'HANDLE', 'TYPE', 'STATUS', 'URL', 'BACKLOG BYTES', 'LAST ERROR'],
        ...drains.map((d) => [
          String(d.id), d.handle, d.drain_type, d.status ?? 'active', d.url, String(d.delivery?.backlog_bytes ?? 0), d.delivery?.last_error ?? '',
        ]),
      ]));
    }), [['essh log-drains list acme'], ['essh log-drains list acme --json | jq \'.[] | {handle, status}\'']]);

  out.helpAfter(cmd
    .command('create')
    .description('add a log drain to an account (account admins and operators)')
    .argument('<account>', 'account handle')
    .requiredOption('--handle <handle>', 'a name for the drain')
    .addOption(new Option('--type <type>', 'the kind of receiver').choices(['https', 'syslog', 'elasticsearch']).makeOptionMandatory())
    .requiredOption('--url <url>', 'https://…, syslog+tls://host:port, or the Elasticsearch cluster URL')
    .option('--token <token>', 'syslog: prefix on every line; elasticsearch: API key (a secret: prefer --token-stdin)')
    .option('--token-stdin', 'read --token from stdin, so it stays out of shell history and ps')
    .option('--ca-cert <file>', 'PEM file of a private CA to trust')
    .option('--index <pattern>', 'elasticsearch: index pattern, e.g. essh-{yyyy}.{MM}.{dd}')
    .option('--pipeline <name>', 'elasticsearch: ingest pipeline')
    .option('--no-ephemeral-sessions', 'do not ship session output to this drain')
    .option('--json', 'print JSON')
    .action(async (account: string, opts: {
      handle: string; type: string; url: string; token?: string; tokenStdin?: boolean; caCert?: string; index?: string; pipeline?: string;
      ephemeralSessions: boolean; json?: boolean;
    }) => {
      if (opts.token !== undefined && opts.tokenStdin) throw new CliError('give the drain token either with --token or on stdin with --token-stdin, not both');
      const token = opts.tokenStdin ? await (await import('./prompt.js')).readStdin() : opts.token;
      let caCert: string | undefined;
      if (opts.caCert) {
        caCert = await readFile(opts.caCert, 'utf8').catch((err: Error) => {
          throw new CliError(`cannot read --ca-cert ${opts.caCert}: ${err.message}`);
        });
      }
      const drain = await (await api()).post<Drain>(`/accounts/${encodeURIComponent(account)}/log_drains`, {
        handle: opts.handle,
        drain_type: opts.type,
        url: opts.url,
        ...(token ? { token } : {}),
        ...(caCert ? { ca_cert: caCert } : {}),
        ...(opts.index ? { index: opts.index } : {}),
        ...(opts.pipeline ? { pipeline: opts.pipeline } : {}),
        drain_ephemeral_sessions: opts.ephemeralSessions,
      });
      if (opts.json) return out.json(drain);
      process.stderr.write(`Log drain ${printable(drain.handle)} (id ${drain.id}) added to ${printable(account)}.\n`);
    }), [
    ['essh log-drains create acme --handle hook --type https --url https://logs.example.com/essh'],
    ['essh log-drains create acme --handle es --type elasticsearch --url https://es.example.com:9200 --token-stdin < es-api-key'],
    ['essh log-drains create acme --handle siem --type syslog --url syslog+tls://siem.example.com:6514 --ca-cert ca.pem'],
  ]);

  /** A command on one drain, by its id; `act` says what it did. */
  const onDrain = (name: string, description: string, act: (id: string) => Promise<string>, examples: [string, string?][]) => out.helpAfter(cmd
    .command(name)
    .description(description)
    .argument('<id>', 'drain id')
    .action(async (id: string) => {
      if (!/^\d+$/.test(id)) throw new CliError(`the drain id must be a positive whole number (got "${id}"); see essh log-drains list ACCOUNT`);
      process.stderr.write(`${await act(id)}\n`);
    }), examples);
  onDrain('delete', 'delete a log drain', async (id) => {
    await (await api()).delete(`/log_drains/${id}`);
    return `Log drain ${id} deleted.`;
  }, [['essh log-drains delete 7']]);
  onDrain('resume', 'resume a paused log drain (after fixing its receiver or credentials): delivery goes on where it stopped', async (id) => {
    await (await api()).post(`/log_drains/${id}/resume`, {});
    return `Log drain ${id} resumed.`;
  }, [['essh log-drains resume 7', 'delivery goes on where it stopped']]);

  return cmd;
}
