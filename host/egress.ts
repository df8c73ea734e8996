import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import type { Db } from '../lib/db.js';
import type { EgressPolicy } from '../lib/networks.js';
import { PeriodicPass } from '../lib/periodic.js';
import { ensureSessionNetwork } from './session-network.js';

const run = promisify(execFile);

/**
 * Where a session container may connect, enforced on its host with nftables: a table of essh's own per
 * installation (`inet essh_<installation>`, IPv4 and IPv6 in one), whose chains hook the kernel's input
 * and forward paths for the session network's bridge. Its own table rather than rules in Docker's
 * DOCKER-USER chain: one atomic `nft -f` sets or replaces all of it (two host processes of one
 * installation on an engine never interleave half-made rules), deleting the table removes every
 * rule, and Docker's own rules (iptables, legacy or nft) are left alone; a packet refused by any
 * table's chain is refused. Traffic from a container to any of the host's own addresses (the bridge's
 * gateway included) takes the input path, so the input chain refuses it all but replies to
 * connections the host opened itself; Docker's DNS resolver (127.0.0.11) is inside the container's
 * own namespace and unaffected. The forward chain refuses, in this order: connections whose
 * destination Docker rewrote (a port published on the host's addresses), the cloud metadata
 * addresses, link-local ranges, then the operator's deny list less its allow list; DNS (port 53) to
 * the host's own resolvers stays open, since the engine's resolver forwards from the container.
 */
export const egressTableName = (installation: string) => `essh_${installation}`;

const REJECT = 'reject with icmpx admin-prohibited';
const METADATA = { ipv4: '169.254.169.254', ipv6: 'fd00:ec2::254' };
const LINK_LOCAL = { ipv4: '169.254.0.0/16', ipv6: 'fe80::/10' };

/** The nft script that replaces the installation's table with the rules for `bridge` (idempotent). */
export function egressRuleset(installation: string, bridge: string, policy: Pick<EgressPolicy, 'deny' | 'allow'>, resolvers: string[]): string {
  const table = `inet ${egressTableName(installation)}`;
  const byFamily = (list: string[], family: 4 | 6) => list.filter((cidr) => net.isIP(cidr.split('/')[0]!) === family);
  const set = (name: string, type: string, elements: string[]) =>
    `  set ${name} { type ${type}; flags interval; auto-merge;${elements.length ? ` elements = { ${elements.join(', ')} };` : ''} }`;
  const dns = (family: 'ip' | 'ip6', list: string[]) =>
    list.length ? [`    ${family} daddr { ${list.join(', ')} } meta l4proto { tcp, udp } th dport 53 accept`] : [];
  const iif = JSON.stringify(bridge);
  return [
    // Made first so that deleting it never fails, then replaced whole, in one transaction.
    `table ${table} {}`,
    `delete table ${table}`,
    `table ${table} {`,
    set('allow4', 'ipv4_addr', byFamily(policy.allow, 4)),
    set('allow6', 'ipv6_addr', byFamily(policy.allow, 6)),
    set('deny4', 'ipv4_addr', byFamily(policy.deny, 4)),
    set('deny6', 'ipv6_addr', byFamily(policy.deny, 6)),
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    `    iifname ${iif} ct state established,related accept`,
    `    iifname ${iif} ${REJECT}`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname ${iif} jump session_egress`,
    '  }',
    '  chain session_egress {',
    `    ct status dnat ${REJECT}`,
    `    ip daddr ${METADATA.ipv4} ${REJECT}`,
    `    ip6 daddr ${METADATA.ipv6} ${REJECT}`,
    ...dns('ip', byFamily(resolvers, 4)),
    ...dns('ip6', byFamily(resolvers, 6)),
    `    ip daddr ${LINK_LOCAL.ipv4} ${REJECT}`,
    `    ip6 daddr ${LINK_LOCAL.ipv6} ${REJECT}`,
    '    ip daddr @allow4 accept',
    '    ip6 daddr @allow6 accept',
    `    ip daddr @deny4 ${REJECT}`,
    `    ip6 daddr @deny6 ${REJECT}`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * The name servers Docker's embedded resolver forwards to: the host's, from its resolv.conf (that of
 * systemd-resolved when the host's own lists only its loopback stub, as Docker does).
 */
export function hostResolvers(): string[] {
  const read = (file: string) => existsSync(file)
    ? readFileSync(file, 'utf8').split('\n').map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1]?.replace(/%.*$/, '')).filter((a): a is string => !!a && net.isIP(a) > 0)
    : [];
  const notLoopback = (a: string) => !/^127\./.test(a) && a !== '::1';
  const own = read('/etc/resolv.conf').filter(notLoopback);
  return own.length ? own : read('/run/systemd/resolve/resolv.conf').filter(notLoopback);
}

class NftError extends Error {
  constructor(message: string, readonly kind: 'no-program' | 'no-table' | 'not-permitted' | 'other') {
    super(message);
  }
}

async function nft(args: string[], input?: string): Promise<string> {
  const call = run('nft', args, { maxBuffer: 4 * 1024 * 1024 });
  if (input !== undefined) call.child.stdin?.end(input);
  try {
    return (await call).stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new NftError('the nft program is missing (Debian package nftables; scripts/setup.sh installs it)', 'no-program');
    const stderr = (e.stderr ?? e.message).trim();
    if (/not permitted/i.test(stderr)) {
      throw new NftError('this process may not change the firewall (it needs CAP_NET_ADMIN: run the host role as root, or grant it that capability)', 'not-permitted');
    }
    throw new NftError(`nft ${args.join(' ')} failed: ${stderr}`, /No such file or directory/.test(stderr) ? 'no-table' : 'other');
  }
}

/** The installation's table as nft lists it (without counters), or null when there is none. */
export async function listEgressRules(installation: string): Promise<string | null> {
  try {
    return await nft(['-s', 'list', 'table', 'inet', egressTableName(installation)]);
  } catch (err) {
    if (err instanceof NftError && err.kind === 'no-table') return null;
    throw err;
  }
}

/** Removes the installation's rules; nothing to do where there are none, or no nft to have set any. */
export async function removeEgressRules(installation: string): Promise<void> {
  try {
    await nft(['delete', 'table', 'inet', egressTableName(installation)]);
  } catch (err) {
    if (err instanceof NftError && (err.kind === 'no-table' || err.kind === 'no-program')) return;
    throw err;
  }
}

/** The Linux bridge behind a Docker bridge network: its `bridge.name` option, else Docker's `br-<id>`. */
async function bridgeOf(docker: Docker, networkId: string): Promise<string> {
  const info = await docker.getNetwork(networkId).inspect() as { Id: string; Options?: Record<string, string> };
  return info.Options?.['com.docker.network.bridge.name'] ?? `br-${info.Id.slice(0, 12)}`;
}

/**
 * The installation's session network on this host, with its egress rules in place before any
 * container joins it (containers join through `sessionNetwork()`), set at start and checked again
 * every pass: rules changed or removed outside essh (`nft flush ruleset`, a firewall reload) are put
 * back, and the host says so. With the operator's ESSH_EGRESS_ENFORCE=0 it sets nothing and warns
 * at every start; otherwise a host that cannot set them (no nft, no CAP_NET_ADMIN, an engine whose
 * bridges are not in this process's network namespace) refuses to start. `stop()` leaves the rules
 * in place: the sessions' containers outlive the process, and its successor takes them over.
 */
export class EgressGuard {
  private applied?: { networkId: string; listing: string };
  private applying?: Promise<void>;
  private readonly passes: PeriodicPass<void>;

  constructor(
    private readonly deps: { docker: Docker; db: Db; installation: string; policy: EgressPolicy; intervalS: number; log: Logger },
  ) {
    this.passes = new PeriodicPass(() => this.check(), { intervalS: deps.intervalS, log: deps.log, what: 'egress rules check' });
  }

  async start(): Promise<void> {
    const { policy, log, installation } = this.deps;
    if (!policy.enforce) {
      log.warn({ installation }, 'ESSH_EGRESS_ENFORCE=0: essh sets no egress rules, so session containers can reach the cloud metadata address, this host\'s own addresses and every private range, the installation\'s control plane included; firewall the session network\'s bridge yourself');
      return;
    }
    try {
      // nft and the right to use it first: a host that has neither leaves no network behind either.
      await nft(['list', 'tables']);
      await this.sessionNetwork();
    } catch (err) {
      throw new Error(`the host cannot set the egress rules of session containers: ${(err as Error).message}. Fix that, or, if this host is firewalled otherwise, set ESSH_EGRESS_ENFORCE=0 (docs/configuration.md).`);
    }
    this.passes.start();
  }

  stop(): Promise<void> {
    return this.passes.stop();
  }

  /** The session network's id, its rules set. */
  async sessionNetwork(): Promise<string> {
    const networkId = await ensureSessionNetwork(this.deps.docker, this.deps.installation, this.deps.db);
    // Again if a pass in progress was setting them for a network made before this one.
    while (this.deps.policy.enforce && this.applied?.networkId !== networkId) await this.apply(networkId);
    return networkId;
  }

  private apply(networkId: string): Promise<void> {
    this.applying ??= (async () => {
      const { docker, installation, policy, log } = this.deps;
      const bridge = await bridgeOf(docker, networkId);
      if (!existsSync(`/sys/class/net/${bridge}`)) {
        throw new Error(`the session network's bridge ${bridge} is not in this process's network namespace (the Docker engine runs on another machine or this process in a container of its own): the rules must be set where the engine runs`);
      }
      const resolvers = hostResolvers();
      await nft(['-f', '-'], egressRuleset(installation, bridge, policy, resolvers));
      this.applied = { networkId, listing: (await listEgressRules(installation)) ?? '' };
      log.info({ bridge, deny: policy.deny, allow: policy.allow, resolvers }, 'egress rules of session containers set');
    })().finally(() => (this.applying = undefined));
    return this.applying;
  }

  private async check(): Promise<void> {
    const applied = this.applied;
    if (!applied) return;
    const listing = await listEgressRules(this.deps.installation);
    if (listing === applied.listing) return;
    this.deps.log.warn({ installation: this.deps.installation, table: egressTableName(this.deps.installation), found: listing === null ? 'none' : 'changed' },
      'the egress rules of session containers were removed or changed outside essh; setting them again');
    await this.apply(applied.networkId);
  }
}
