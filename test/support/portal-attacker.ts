// A hostile client of the SSH portal, run as a process of its own by test/portal-abuse.test.ts so that
// its work does not share the portal's event loop: it holds unauthenticated connections open and
// tries bad passwords, from loopback addresses of its own (127.0.0.0/8 all reach this host).
// Held connections come from one address (`127.0.0.2`) or from several (`127.0.3.1*50`: 50 addresses
// from there on, sharing the connections; one the portal let in and dropped is opened again).
import net from 'node:net';
import ssh2 from 'ssh2';

const [port = '', user = '', holdFrom = '', guessFrom = '', holds = '0', guesses = '0'] = process.argv.slice(2);
const PORT = Number(port);
const held: net.Socket[] = [];

let stopped = false;

/** Connections that say hello and then nothing, until the portal drops them. */
function hold(n: number, from: string) {
  const [first = '', count = '1'] = from.split('*');
  const [a, b, c, d] = first.split('.').map(Number);
  const sources = Array.from({ length: Number(count) }, (_, i) => `${a}.${b}.${c}.${d! + i}`);
  const open = (source: string) => {
    const s = net.connect({ host: '127.0.0.1', port: PORT, localAddress: source });
    s.on('connect', () => s.write('SSH-2.0-attacker\r\n'));
    s.on('error', () => undefined);
    if (sources.length > 1) {
      let admitted = false;
      s.once('data', () => (admitted = true));
      s.on('close', () => admitted && !stopped && setTimeout(() => open(source), 500));
    }
    held.push(s);
  };
  for (let i = 0; i < n; i++) open(sources[i % sources.length]!);
}

/** One connection trying passwords until the portal stops it; resolves with how many it got to try. */
function guess(from: string, budget: { left: number }): Promise<number> {
  return new Promise((resolve) => {
    let tried = 0;
    const client = new ssh2.Client();
    const done = () => {
      client.end();
      resolve(tried);
    };
    client.on('error', done);
    client.on('close', done);
    client.on('ready', done);
    client.connect({
      sock: net.connect({ host: '127.0.0.1', port: PORT, localAddress: from }),
      username: user,
      readyTimeout: 20_000,
      authHandler: (_methods: unknown, _partial: unknown, next: (m: unknown) => void) => {
        if (budget.left <= 0) return next(false);
        budget.left--;
        tried++;
        next({ type: 'password', username: user, password: `wrong-${Math.random()}` });
      },
    } as ssh2.ConnectConfig);
  });
}

// Never longer than a minute, whatever the portal does.
setTimeout(() => {
  process.stdout.write(JSON.stringify({ tried, heldOpen: -1, timedOut: true }) + '\n');
  process.exit(0);
}, 60_000).unref();
hold(Number(holds), holdFrom);
const budget = { left: Number(guesses) };
const [a, b, c] = guessFrom.split('.').map(Number);
// A botnet rather than one noisy host: 60 addresses, 20 connections at a time. An address the portal
// shuts out (its connections end before any password) is given up.
const addresses = Array.from({ length: 60 }, (_, i) => `${a}.${b}.${c}.${10 + i}`);
let next = 0;
let tried = 0;
await Promise.all(Array.from({ length: 20 }, async () => {
  while (budget.left > 0 && addresses.length) {
    const from = addresses[next++ % addresses.length]!;
    const n = await guess(from, budget);
    tried += n;
    if (n === 0) addresses.splice(addresses.indexOf(from), 1);
  }
}));
stopped = true;
const stillOpen = held.filter((s) => !s.destroyed && s.readyState === 'open').length;
process.stdout.write(JSON.stringify({ tried, heldOpen: stillOpen }) + '\n');
for (const s of held) s.destroy();
process.exit(0);
