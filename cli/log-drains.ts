import { readFile } from 'node:fs/promises';
import { Command } from 'commander';
import type { EsshApi } from './api.js';
import { CliError } from './config.js';

interface Drain {
  id: number;
  handle: string;
  account: string;
  drain_type: string;
  url: string;
  drain_ephemeral_sessions: boolean;
  status?: string;
  paused_reason?: string | null;
  delivery?: { backlog_bytes?: number; last_success_at?: string | null; last_error?: string | null };
}

/** `essh log-drains list|create|delete` (CONTRACT §5, §9): thin over the drains routes. */
export function logDrainsCommand(api: () => Promise<EsshApi>, out: {
  json: (v: unknown) => void;
  table: (rows: string[][]) => string;
}): Command {
  const cmd = new Command('log-drains').description("manage an account's log drains");

  cmd
    .command('list')
    .description("list an account's log drains with their delivery state")
    .argument('<account>', 'account handle')
    .option('--json', 'print JSON')
    .action(async (account: string, opts: { json?: boolean }) => {
      const drains = await (await api()).list<Drain>(`/accounts/${encodeURIComponent(account)}/log_drains`);
      if (opts.json) return out.json(drains);
      if (!drains.length) return void process.stderr.write(`Account ${account} has no log drains.\n`);
      process.stdout.write(out.table([
        ['ID', 'HANDLE', 'TYPE', 'STATUS', 'URL', 'BACKLOG BYTES', 'LAST ERROR'],
        ...drains.map((d) => [
          String(d.id), d.handle, d.drain_type, d.status ?? 'active', d.url, String(d.delivery?.backlog_bytes ?? 0), d.delivery?.last_error ?? '',
        ]),
      ]));
    });

  cmd
    .command('create')
    .description('add a log drain to an account (account admins and operators)')
    .argument('<account>', 'account handle')
    .requiredOption('--handle <handle>', 'a name for the drain')
    .requiredOption('--type <type>', 'https, syslog or elasticsearch')
    .requiredOption('--url <url>', 'https://…, syslog+tls://host:port, or the Elasticsearch cluster URL')
    .option('--token <token>', 'syslog: prefix on every line; elasticsearch: API key')
    .option('--ca-cert <file>', 'PEM file of a private CA to trust')
    .option('--index <pattern>', 'elasticsearch: index pattern, e.g. essh-{yyyy}.{MM}.{dd}')
    .option('--pipeline <name>', 'elasticsearch: ingest pipeline')
    .option('--no-ephemeral-sessions', 'do not ship session output to this drain')
    .option('--json', 'print JSON')
    .action(async (account: string, opts: {
      handle: string; type: string; url: string; token?: string; caCert?: string; index?: string; pipeline?: string;
      ephemeralSessions: boolean; json?: boolean;
    }) => {
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
        ...(opts.token ? { token: opts.token } : {}),
        ...(caCert ? { ca_cert: caCert } : {}),
        ...(opts.index ? { index: opts.index } : {}),
        ...(opts.pipeline ? { pipeline: opts.pipeline } : {}),
        drain_ephemeral_sessions: opts.ephemeralSessions,
      });
      if (opts.json) return out.json(drain);
      process.stderr.write(`Log drain ${drain.handle} (id ${drain.id}) added to ${account}.\n`);
    });

  cmd
    .command('delete')
    .description('delete a log drain')
    .argument('<id>', 'drain id')
    .action(async (id: string) => {
      if (!/^\d+$/.test(id)) throw new CliError(`the drain id must be a positive whole number (got "${id}"); see essh log-drains list ACCOUNT`);
      await (await api()).delete(`/log_drains/${id}`);
      process.stderr.write(`Log drain ${id} deleted.\n`);
    });

  cmd
    .command('resume')
    .description('resume a paused log drain (after fixing its receiver or credentials): delivery goes on where it stopped')
    .argument('<id>', 'drain id')
    .action(async (id: string) => {
      if (!/^\d+$/.test(id)) throw new CliError(`the drain id must be a positive whole number (got "${id}"); see essh log-drains list ACCOUNT`);
      await (await api()).post(`/log_drains/${id}/resume`, {});
      process.stderr.write(`Log drain ${id} resumed.\n`);
    });

  return cmd;
}
