import net from 'node:net';

/**
 * Which Docker networks a session container may join (CONTRACT §7). `host` would give the session the
 * host's loopback services (Temporal, the API, the database), `container:…` another container's
 * namespace and `none` nothing an app can work with: all three are refused for everyone, at the API
 * and again when a container is created (an older database may still hold one).
 */
export function forbiddenNetworkReason(network: string): string | null {
  const n = network.trim().toLowerCase();
  if (n === 'host') return 'the host network would let the session reach every service on the host, other tenants\' included';
  if (n === 'none') return 'a session without a network cannot work like the app';
  if (n.startsWith('container:')) return 'joining another container\'s network namespace would let the session reach that container';
  if (n === 'bridge' || n === 'default') return 'Docker\'s default bridge lets containers reach each other; leave "network" out for essh\'s isolated network';
  return null;
}

/**
 * The network every session container joins unless an operator set the app's own: a bridge with
 * inter-container traffic switched off, so that no session reaches another session's container,
 * whichever account it belongs to. Made once per installation on each engine.
 */
export const sessionNetworkName = (installation: string) => `essh-${installation}`;

/**
 * Where session containers may connect beyond what is always refused (link-local, the metadata
 * addresses, the host's own addresses; host/egress.ts): `deny` ranges are refused unless an `allow`
 * range holds the address. By default the private ranges, where an installation's control plane
 * (Temporal, PostgreSQL, the hosts' endpoints) usually lives; an operator opens what apps need.
 */
export interface EgressPolicy {
  /** Off only by the operator's explicit choice (ESSH_EGRESS_ENFORCE=0): no rules are set at all. */
  enforce: boolean;
  deny: string[];
  allow: string[];
}

export const DEFAULT_EGRESS_DENY = '10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7';

/** A comma-separated list of addresses and CIDR ranges (IPv4 or IPv6); a bad entry stops start-up with a sentence naming it. */
export function parseCidrList(variable: string, value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean).map((entry) => {
    const [address = '', prefix, ...rest] = entry.split('/');
    const family = net.isIP(address);
    const bits = prefix === undefined ? (family === 6 ? 128 : 32) : Number(prefix);
    if (!family || rest.length || (prefix !== undefined && !/^\d+$/.test(prefix)) || bits > (family === 6 ? 128 : 32)) {
      throw new Error(`${variable}: "${entry}" is not an IP address or CIDR range; write e.g. 10.0.0.0/8 or fd00::/8, comma-separated.`);
    }
    return `${address}/${bits}`;
  });
}
