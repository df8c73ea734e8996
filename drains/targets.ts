// Where a drain may send: never into the installation's own network (tenant isolation). A drain URL is
// chosen by an account admin, and essh connects to it from inside the platform; without this guard a
// drain could reach loopback services, the cloud metadata endpoint or private hosts.
import dns from 'node:dns';
import net from 'node:net';

/**
 * Address ranges a drain may not connect to, with the reason shown to whoever tries. Node's own
 * net.BlockList does the matching (it also matches IPv4-mapped IPv6 addresses such as ::ffff:127.0.0.1
 * against the IPv4 ranges).
 */
const FORBIDDEN: { net: string; prefix: number; family: 'ipv4' | 'ipv6'; what: string }[] = [
  { net: '0.0.0.0', prefix: 8, family: 'ipv4', what: 'an unspecified ("this network") address' },
  { net: '10.0.0.0', prefix: 8, family: 'ipv4', what: 'a private address (RFC 1918)' },
  { net: '100.64.0.0', prefix: 10, family: 'ipv4', what: 'a carrier-grade NAT address (RFC 6598)' },
  { net: '127.0.0.0', prefix: 8, family: 'ipv4', what: 'a loopback address' },
  { net: '169.254.169.254', prefix: 32, family: 'ipv4', what: 'the cloud metadata address' },
  { net: '169.254.0.0', prefix: 16, family: 'ipv4', what: 'a link-local address' },
  { net: '172.16.0.0', prefix: 12, family: 'ipv4', what: 'a private address (RFC 1918)' },
  { net: '192.168.0.0', prefix: 16, family: 'ipv4', what: 'a private address (RFC 1918)' },
  { net: '224.0.0.0', prefix: 4, family: 'ipv4', what: 'a multicast address' },
  { net: '240.0.0.0', prefix: 4, family: 'ipv4', what: 'a reserved or broadcast address' },
  { net: '::', prefix: 128, family: 'ipv6', what: 'an unspecified address' },
  { net: '::1', prefix: 128, family: 'ipv6', what: 'a loopback address' },
  { net: 'fd00:ec2::254', prefix: 128, family: 'ipv6', what: 'the cloud metadata address' },
  { net: 'fc00::', prefix: 7, family: 'ipv6', what: 'a private (unique local) address' },
  { net: 'fe80::', prefix: 10, family: 'ipv6', what: 'a link-local address' },
  { net: 'ff00::', prefix: 8, family: 'ipv6', what: 'a multicast address' },
];

const lists = FORBIDDEN.map((r) => {
  const list = new net.BlockList();
  list.addSubnet(r.net, r.prefix, r.family);
  return { list, what: r.what };
});

/** An IPv4 address carried inside an IPv6 one that routes to it (NAT64 64:ff9b::/96, 6to4 2002::/16). */
function embeddedIpv4(address: string): string | null {
  const bytes = ipv6Bytes(address);
  if (!bytes) return null;
  const isNat64 = bytes[0] === 0x00 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && bytes.subarray(4, 12).every((b) => b === 0);
  if (isNat64) return Array.from(bytes.subarray(12, 16)).join('.');
  if (bytes[0] === 0x20 && bytes[1] === 0x02) return Array.from(bytes.subarray(2, 6)).join('.');
  return null;
}

function ipv6Bytes(address: string): Buffer | null {
  if (net.isIPv6(address) === false) return null;
  const [head, tail] = address.includes('::') ? address.split('::') as [string, string] : [address, null];
  const parse = (part: string) => (part ? part.split(':') : []).flatMap((g) => (g.includes('.') ? ipv4Groups(g) : [g]));
  const h = parse(head);
  const t = tail === null ? [] : parse(tail);
  const groups = tail === null ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  const buf = Buffer.alloc(16);
  groups.forEach((g, i) => buf.writeUInt16BE(parseInt(g, 16), i * 2));
  return buf;
}

function ipv4Groups(v4: string): string[] {
  const o = v4.split('.').map(Number);
  return [((o[0]! << 8) | o[1]!).toString(16), ((o[2]! << 8) | o[3]!).toString(16)];
}

/** Why a drain may not connect to this IP address, or null when it may. */
export function forbiddenAddressReason(address: string): string | null {
  const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = net.isIP(bare);
  if (!family) return 'not an IP address';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const { list, what } of lists) if (list.check(bare, type)) return what;
  if (family === 6) {
    const v4 = embeddedIpv4(bare);
    if (v4) {
      const inner = forbiddenAddressReason(v4);
      if (inner) return `${inner} (inside ${bare})`;
    }
  }
  return null;
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
 * The URL as shown back: credentials masked as `****`. Masked are the password, every query value
 * (`?token=****&api_key=****`: a query carries keys more often than not) and every path segment of
 * 16 or more characters mixing letters and digits (`/services/T0/B0/****`, `/hooks/****`): such a
 * segment is far more likely a key than a name.
 */
export function displayUrl(raw: string): string {
  const u = new URL(raw);
  if (u.password) u.password = '****';
  u.pathname = u.pathname.split('/').map((seg) => (SECRET_SEGMENT.test(seg) ? '****' : seg)).join('/');
  if (u.search) {
    const masked = [...u.searchParams.keys()].map((k) => `${encodeURIComponent(k)}=****`).join('&');
    u.search = masked;
  }
  return u.toString().replaceAll('%2A%2A%2A%2A', '****');
}
