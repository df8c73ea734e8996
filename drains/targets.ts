// Where a drain may send: never into the installation's own network (tenant isolation). A drain URL is
// chosen by an account admin, and essh connects to it from inside the platform; without this guard a
// drain could reach loopback services, the cloud metadata endpoint or private hosts.
import dns from 'node:dns';
import net from 'node:net';
import ipaddr from 'ipaddr.js';

/*
 * Which addresses are special-purpose comes from ipaddr.js (its range() follows the IANA
 * special-purpose registries: private, loopback, link-local, unique local, CGNAT, benchmarking,
 * documentation, Teredo, NAT64, 6to4, discard…): a maintained list, where a hand-written one had
 * missed 64:ff9b:1::/48, 2001::/32, 192.0.0.0/24 and 198.18.0.0/15. A drain may send only to what
 * it calls "unicast" (public), or through a translator to a public IPv4 address (below).
 */

/** Why each of ipaddr.js's ranges is refused; a range it adds later is refused under its own name. */
const RANGE_REASONS: Record<string, string> = {
  unspecified: 'an unspecified ("this network") address',
  broadcast: 'the broadcast address',
  multicast: 'a multicast address',
  linkLocal: 'a link-local address',
  loopback: 'a loopback address',
  carrierGradeNat: 'a carrier-grade NAT address (RFC 6598)',
  private: 'a private address (RFC 1918)',
  uniqueLocal: 'a private (unique local) address',
  reserved: 'a reserved address (IETF protocol assignments, documentation, benchmarking or future use)',
  benchmarking: 'a benchmarking address (RFC 5180)',
  teredo: 'a Teredo tunnel address (RFC 4380)',
  rfc6052: 'a local-use NAT64 address (RFC 8215)',
  rfc6145: 'an IPv4-translated address (RFC 6145)',
  discard: 'a discard-only address (RFC 6666)',
  deprecatedSiteLocal: 'a site-local address',
};

type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];
const inCidr = (a: ipaddr.IPv4 | ipaddr.IPv6, cidr: Cidr) => a.kind() === cidr[0].kind() && a.match(cidr);

/** The cloud metadata addresses: inside ranges ipaddr.js covers, but named so whoever tries knows what they hit. */
const METADATA: Cidr[] = [ipaddr.parseCIDR('169.254.169.254/32'), ipaddr.parseCIDR('fd00:ec2::254/128')];
/** What ipaddr.js calls unicast but is not public: the deprecated IPv4-compatible addresses (RFC 4291). */
const IPV4_COMPATIBLE: Cidr = ipaddr.parseCIDR('::/96');

/** Translators to IPv4 whose embedded address is what is reached: allowed when that one is public. */
const NAT64_WELL_KNOWN = ipaddr.parseCIDR('64:ff9b::/96');

function embeddedIpv4(address: ipaddr.IPv6, range: string): string | null {
  const b = address.toByteArray();
  if (range === 'rfc6052' && address.match(NAT64_WELL_KNOWN)) return b.slice(12, 16).join('.');
  if (range === '6to4') return b.slice(2, 6).join('.');
  return null;
}

/** Why a drain may not connect to this IP address, or null when it may. */
export function forbiddenAddressReason(address: string): string | null {
  const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  if (!net.isIP(bare)) return 'not an IP address';
  // process() turns an IPv4-mapped IPv6 address (::ffff:127.0.0.1) into the IPv4 one it reaches.
  const parsed = ipaddr.process(bare);
  if (METADATA.some((cidr) => inCidr(parsed, cidr))) return 'the cloud metadata address';
  const range = parsed.range();
  if (range === 'unicast') return inCidr(parsed, IPV4_COMPATIBLE) ? 'an IPv4-compatible address (deprecated, RFC 4291)' : null;
  if (parsed.kind() === 'ipv6') {
    const v4 = embeddedIpv4(parsed as ipaddr.IPv6, range);
    if (v4) {
      const inner = forbiddenAddressReason(v4);
      return inner ? `${inner} (inside ${bare})` : null;
    }
  }
  return RANGE_REASONS[range] ?? `a special-purpose address (${range})`;
}

export class ForbiddenTargetError extends Error {
  readonly code = 'ESSH_FORBIDDEN_TARGET';
}

function refusal(host: string, address: string, reason: string): ForbiddenTargetError {
  const via = host === address ? address : `${host} (${address})`;
  return new ForbiddenTargetError(
    `${via} is ${reason}: drains may only send to public addresses` +
      ' (an operator may allow private ones with ESSH_DRAINS_ALLOW_PRIVATE=1)',
  );
}

/** The host name of a drain URL as it is connected to (brackets of an IPv6 literal removed). */
export function targetHost(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '');
}

/**
 * At creation: the drain's host (resolved if it is a name) must have only public addresses. Throws a
 * ForbiddenTargetError, or an Error when the name does not resolve.
 */
export async function checkDrainTarget(url: URL, allowPrivate: boolean): Promise<void> {
  if (allowPrivate) return;
  const host = targetHost(url);
  let addresses: string[];
  if (net.isIP(host)) addresses = [host];
  else {
    try {
      addresses = (await dns.promises.lookup(host, { all: true, verbatim: true })).map((a) => a.address);
    } catch (err) {
      throw new Error(`${host} does not resolve (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  for (const a of addresses) {
    const reason = forbiddenAddressReason(a);
    if (reason) throw refusal(host, a, reason);
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;

/**
 * At connect time (DNS may have changed since creation): a `lookup` for https.request and tls.connect
 * that refuses a name resolving to any forbidden address, so no connection to one is ever opened. IP
 * literals never reach a lookup: `assertConnectable` checks them before connecting.
 */
export function guardedLookup(allowPrivate: boolean): net.LookupFunction | undefined {
  if (allowPrivate) return undefined;
  return ((hostname: string, options: dns.LookupOptions, callback: LookupCallback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, options.all ? [] : '', 0);
      const list = addresses as dns.LookupAddress[];
      for (const a of list) {
        const reason = forbiddenAddressReason(a.address);
        if (reason) return callback(refusal(hostname, a.address, reason) as NodeJS.ErrnoException, options.all ? [] : '', 0);
      }
      if (options.all) return callback(null, list);
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '', 0);
      callback(null, first.address, first.family);
    });
  }) as unknown as net.LookupFunction;
}

/** Before connecting to an IP literal (which skips the lookup): throws a ForbiddenTargetError for a forbidden one. */
export function assertConnectable(host: string, allowPrivate: boolean): void {
  if (allowPrivate || !net.isIP(host)) return;
  const reason = forbiddenAddressReason(host);
  if (reason) throw refusal(host, host, reason);
}

export function isForbiddenTarget(err: unknown): err is ForbiddenTargetError {
  return (err as { code?: string } | null)?.code === 'ESSH_FORBIDDEN_TARGET';
}

// ---- showing a drain URL ----

/** A path segment this long with both letters and digits is taken for a secret (a webhook key, a token). */
const SECRET_SEGMENT = /^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9._~%+=-]{16,}$/;

/**
 * The URL as shown back: credentials masked as `****`. Masked are the whole userinfo (a receiver often
 * takes its key as the user name alone, `https://KEY@host`, so the name is no less secret than a
 * password), every query value
 * (`?token=****&api_key=****`: a query carries keys more often than not) and every path segment of
 * 16 or more characters mixing letters and digits (`/services/T0/B0/****`, `/hooks/****`): such a
 * segment is far more likely a key than a name.
 */
export function displayUrl(raw: string): string {
  const u = new URL(raw);
  if (u.username) u.username = '****';
  if (u.password) u.password = '****';
  u.pathname = u.pathname.split('/').map((seg) => (SECRET_SEGMENT.test(seg) ? '****' : seg)).join('/');
  if (u.search) {
    const masked = [...u.searchParams.keys()].map((k) => `${encodeURIComponent(k)}=****`).join('&');
    u.search = masked;
  }
  return u.toString().replaceAll('%2A%2A%2A%2A', '****');
}
