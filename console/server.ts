import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Request, RequestHandler, Response } from 'express';

/**
 * The web console (console/main.ts) as the API serves it at /console: one HTML page and the bundle
 * esbuild makes of the TypeScript, the asciinema-player package and the styles. The bundle is made on
 * the first request and kept in memory, so a checkout needs no build step and never serves stale code
 * (as bin/essh.js does for the CLI); `npm run console:build` writes the same files to a folder.
 *
 * Everything the page needs comes from this origin: the Content-Security-Policy allows nothing else.
 * 'wasm-unsafe-eval' lets the player compile its terminal emulator, WebAssembly carried inside the
 * bundle itself; it allows no JavaScript eval.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ConsoleAsset {
  body: Buffer;
  contentType: string;
}

/** Bundles the console: console.js and console.css (asciinema-player's styles and ours), and index.html. */
export async function buildConsole(opts: { minify?: boolean } = {}): Promise<Map<string, ConsoleAsset>> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: { console: 'console/main.ts' },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome111', 'firefox115', 'safari16.4'],
    minify: opts.minify ?? true,
    // The licenses of the packages in the bundle are served beside it (licenses.txt) instead.
    legalComments: 'none',
    outdir: 'out',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const assets = new Map<string, ConsoleAsset>();
  for (const file of result.outputFiles) {
    const name = path.basename(file.path);
    assets.set(name, { body: Buffer.from(file.contents), contentType: contentTypeOf(name) });
  }
  assets.set('index.html', { body: await readFile(path.join(root, 'console', 'index.html')), contentType: contentTypeOf('index.html') });
  assets.set('licenses.txt', { body: Buffer.from(await licenses(Object.keys(result.metafile.inputs))), contentType: contentTypeOf('licenses.txt') });
  return assets;
}

function contentTypeOf(name: string) {
  const types: Record<string, string> = {
    '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.txt': 'text/plain; charset=utf-8', '.html': 'text/html; charset=utf-8',
  };
  return types[path.extname(name)] ?? 'application/octet-stream';
}

/** Writes the console's files to a folder: index.html, and the rest under assets/ (its URLs' layout). */
export async function writeConsole(out: string) {
  await mkdir(path.join(out, 'assets'), { recursive: true });
  for (const [name, asset] of await buildConsole()) {
    await writeFile(name === 'index.html' ? path.join(out, name) : path.join(out, 'assets', name), asset.body);
  }
}

/**
 * The files the production build wrote beside its bundle (server/build.ts: dist/console, next to
 * dist/server.js, which this module is part of there); none in a checkout, where this module is
 * console/server.ts and there is no console/console.
 */
async function prebuiltConsole(): Promise<Map<string, ConsoleAsset> | undefined> {
  const dir = fileURLToPath(new URL('./console/', import.meta.url));
  if (!existsSync(path.join(dir, 'index.html'))) return undefined;
  const assets = new Map<string, ConsoleAsset>([['index.html', { body: await readFile(path.join(dir, 'index.html')), contentType: contentTypeOf('index.html') }]]);
  for (const name of await readdir(path.join(dir, 'assets'))) {
    assets.set(name, { body: await readFile(path.join(dir, 'assets', name)), contentType: contentTypeOf(name) });
  }
  return assets;
}

/** The name, version and license text of every npm package the bundle holds code of. */
async function licenses(inputs: string[]): Promise<string> {
  const packages = new Set<string>();
  for (const input of inputs) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m) packages.add(m[1]!);
  }
  const parts = ['The essh console bundles these packages; their licenses follow.'];
  for (const name of [...packages].sort()) {
    const dir = path.join(root, 'node_modules', name);
    const pkg = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as { version: string; license?: string };
    let text = `(license: ${pkg.license ?? 'see the package'})`;
    for (const file of ['LICENSE', 'LICENSE.md', 'LICENSE.txt', 'license']) {
      const found = await readFile(path.join(dir, file), 'utf8').catch(() => undefined);
      if (found) {
        text = found;
        break;
      }
    }
    parts.push(`${'='.repeat(78)}\n${name} ${pkg.version}\n${'='.repeat(78)}\n${text.trim()}`);
  }
  return parts.join('\n\n') + '\n';
}

/** The console's pages for createApi (api/app.ts): GET /console and GET /console/assets/{file}. */
export function consolePages(log?: { error: (obj: object, msg: string) => void }): { path: string; handler: RequestHandler }[] {
  let built: Promise<Map<string, ConsoleAsset>> | undefined;
  const assets = () => {
    built ??= prebuiltConsole().then((prebuilt) => prebuilt ?? buildConsole()).catch((err) => {
      built = undefined; // try again on the next request
      throw err;
    });
    return built;
  };
  const send = async (res: Response, req: Request, name: string) => {
    res.setHeader('Content-Security-Policy', CONSOLE_CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    res.setHeader('X-Frame-Options', 'DENY');
    // Revalidated each time (express answers 304 to a matching ETag): never a stale bundle after an upgrade.
    res.setHeader('Cache-Control', 'no-cache');
    let all: Map<string, ConsoleAsset>;
    try {
      all = await assets();
    } catch (err) {
      log?.error({ err }, 'building the web console failed');
      return void res.status(500).type('text/plain').send('The console could not be built; the error has been logged.');
    }
    const asset = all.get(name);
    if (!asset) {
      return void res.status(404).json({ error: 'not_found', message: `No console file ${req.path}.` });
    }
    res.status(200).type(asset.contentType).send(asset.body);
  };
  return [
    { path: '/console', handler: (req, res) => void send(res, req, 'index.html') },
    { path: '/console/assets/:file', handler: (req, res) => void send(res, req, String(req.params.file)) },
  ];
}
