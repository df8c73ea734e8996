// Writes the web console's files (what the API serves at /console) to a folder:
// `npm run console:build -- DIR` (default dist/console). The API does not need it in a checkout: it
// bundles the console in memory on the first request (console/server.ts); the production build
// (server/build.ts) writes them beside its bundle, where the API serves them from.
import path from 'node:path';
import { writeConsole } from './server.js';

await writeConsole(path.resolve(process.argv[2] ?? 'dist/console'));
