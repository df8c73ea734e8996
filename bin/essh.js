#!/usr/bin/env node
// The `essh` command: runs the TypeScript CLI through tsx's loader, so it works from a checkout
// (npx essh, npm link) without a build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/main.ts');
await main();
// An attached session leaves stdin and sockets behind that would keep the process alive; the output
// is flushed first.
process.stdout.write('', () => process.exit(process.exitCode ?? 0));
