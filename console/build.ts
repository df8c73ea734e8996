// Writes the web console's files (what the API serves at /console) to a folder:
// `npm run console:build -- DIR` (default dist/console). The API does not need it: it bundles the
// console in memory on the first request (console/server.ts).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildConsole } from './server.js';

const out = path.resolve(process.argv[2] ?? 'dist/console');
await mkdir(path.join(out, 'assets'), { recursive: true });
for (const [name, asset] of await buildConsole()) {
  await writeFile(name === 'index.html' ? path.join(out, name) : path.join(out, 'assets', name), asset.body);
  process.stderr.write(`${name}: ${asset.body.length} bytes\n`);
}
