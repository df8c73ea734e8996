// Debian's nginx running the shipped deploy/nginx/essh-api.conf in front of a test's API replicas:
// only its certificate, ports and upstream servers are swapped for the test's, each swap checked to hit
// exactly once. Shared by test/tls-proxy.test.ts and test/rolling-restart.test.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { projectRoot } from '../../lib/config.js';
import { waitFor } from './harness.js';
import { run } from './portal-terminal.js';

const SITE = path.join(projectRoot, 'deploy', 'nginx', 'essh-api.conf');

/** A CA, and a certificate it signs for localhost and 127.0.0.1 (what the proxy presents); returns the CA's PEM file. */
export async function makeCertificates(dir: string): Promise<string> {
  const f = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=essh test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await run('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost']);
  await writeFile(f('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-out', f('server.pem'), '-days', '2', '-extfile', f('server.ext')]);
  return f('ca.pem');
}

/** The shipped site file with the test's certificate (from makeCertificates), port and API replicas put in. */
async function siteForTest(dir: string, port: number, apiPorts: number[]) {
  let site = await readFile(SITE, 'utf8');
  const swap = (from: RegExp, to: string) => {
    expect(site.match(new RegExp(from.source, 'gm')), `${from} in ${SITE}`).toHaveLength(1);
    site = site.replace(from, to);
  };
  const replica = /^\s*server 127\.0\.0\.1:3000( [^;]*)?;/m;
  swap(replica, apiPorts.map((p) => `    server 127.0.0.1:${p}${site.match(replica)?.[1] ?? ''};`).join('\n'));
  swap(/^\s*listen 443 ssl;/m, `    listen 127.0.0.1:${port} ssl;`);
  swap(/^\s*listen \[::\]:443 ssl;/m, '');
  swap(/^\s*ssl_certificate .*$/m, `    ssl_certificate ${path.join(dir, 'server.pem')};`);
  swap(/^\s*ssl_certificate_key .*$/m, `    ssl_certificate_key ${path.join(dir, 'server.key')};`);
  return site;
}

export interface Answer { status: number; headers: http.IncomingHttpHeaders; body: string }

/** One request, its answer read to the end. `ca` is trusted for https. */
export function request(url: string, opts: https.RequestOptions & { body?: string } = {}): Promise<Answer> {
  const { request: send } = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    const req = send(url, opts, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end(opts.body);
  });
}

export interface Nginx {
  url: string;
  accessLog(): Promise<string>;
  errorLog(): Promise<string>;
  stop(): Promise<void>;
}

/** nginx with the shipped site in `dir` (which holds the certificates), on `port`, in front of `apiPorts`. */
export async function startNginx(dir: string, opts: { port: number; apiPorts: number[]; ca: string }): Promise<Nginx> {
  await writeFile(path.join(dir, 'essh-api.conf'), await siteForTest(dir, opts.port, opts.apiPorts));
  // Everything nginx writes stays in the temp dir; as root its workers run as nobody, who must reach it.
  await chmod(dir, 0o711);
  const conf = path.join(dir, 'nginx.conf');
  await writeFile(conf, [
    'daemon off;',
    'worker_processes 1;',
    `pid ${path.join(dir, 'nginx.pid')};`,
    `error_log ${path.join(dir, 'error.log')} warn;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${path.join(dir, 'access.log')};`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${path.join(dir, `${t}-temp`)};`),
    `  include ${path.join(dir, 'essh-api.conf')};`,
    '}',
  ].join('\n'));
  await run('nginx', ['-t', '-p', dir, '-e', path.join(dir, 'error.log'), '-c', conf]);
  const child: ChildProcess = spawn('nginx', ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  child.stdout!.on('data', (c: Buffer) => (said += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (said += c.toString()));
  // nginx must not outlive the test process, however the run ends.
  process.once('exit', () => child.kill('SIGKILL'));
  const url = `https://127.0.0.1:${opts.port}`;
  const ca = await readFile(opts.ca, 'utf8');
  await waitFor('nginx listening', () => request(`${url}/openapi.json`, { ca }).then((r) => r.status === 200).catch(() => {
    if (child.exitCode !== null) throw new Error(`nginx exited ${child.exitCode}: ${said}`);
    return false;
  }));
  return {
    url,
    accessLog: () => readFile(path.join(dir, 'access.log'), 'utf8'),
    errorLog: () => readFile(path.join(dir, 'error.log'), 'utf8').catch(() => ''),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
