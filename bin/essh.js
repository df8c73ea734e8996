#!/usr/bin/env node
// The `essh` command. It runs the CLI from one JavaScript bundle that esbuild makes from the TypeScript
// on first use and again whenever one of the bundle's sources changed (esbuild's metafile lists them),
// so a checkout needs no build step and never runs stale code. Transpiling on every start through tsx
// cost about 250 ms, which `essh ssh` paid on the way to the prompt. Where the bundle cannot be written
// (a read-only install), tsx transpiles in memory as before.
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entry = path.join(root, 'cli', 'main.ts');
const cacheDir = path.join(root, 'node_modules', '.cache', 'essh-cli');
const bundle = path.join(cacheDir, 'main.mjs');
const metafile = path.join(cacheDir, 'meta.json');

function bundleIsFresh() {
  try {
    const builtAt = statSync(bundle).mtimeMs;
    const { inputs } = JSON.parse(readFileSync(metafile, 'utf8'));
    return Object.keys(inputs).every((input) => statSync(path.resolve(root, input)).mtimeMs <= builtAt);
  } catch {
    return false;
  }
}

async function buildBundle() {
  const esbuild = await import('esbuild');
  const result = esbuild.buildSync({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // Dependencies stay in node_modules, resolved from the cache folder inside it.
    packages: 'external',
    metafile: true,
    write: false,
    logLevel: 'silent',
  });
  mkdirSync(cacheDir, { recursive: true });
  // Written aside and renamed, so a CLI starting at the same moment never reads half a bundle.
  const suffix = `.${process.pid}.tmp`;
  writeFileSync(bundle + suffix, result.outputFiles[0].contents);
  writeFileSync(metafile + suffix, JSON.stringify(result.metafile));
  renameSync(metafile + suffix, metafile);
  renameSync(bundle + suffix, bundle);
}

async function loadCli() {
  if (bundleIsFresh()) return import(pathToFileURL(bundle).href);
  try {
    await buildBundle();
    return await import(pathToFileURL(bundle).href);
  } catch {
    const { register } = await import('tsx/esm/api');
    register();
    return import(pathToFileURL(entry).href);
  }
}

const { main } = await loadCli();
await main();
// An attached session leaves stdin and sockets behind that would keep the process alive; the output
// is flushed first.
process.stdout.write('', () => process.exit(process.exitCode ?? 0));
