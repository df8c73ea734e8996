#!/usr/bin/env node
// The `essh` command. It runs the CLI from one JavaScript bundle that esbuild makes from the TypeScript
// on first use and again whenever one of the bundle's sources changed, so a checkout needs no build
// step and never runs stale code: every start stats each input esbuild listed (the CLI's own files,
// package.json and commander's; about 20 stats, well under a millisecond) and runs the bundle only if
// all are older than its mtime, which is set to when its build began (less a margin for the kernel's
// coarse file clock), so an edit made while esbuild was reading is also seen as newer.
// Transpiling on every start through tsx cost about 250 ms, which `essh ssh` paid on the way to the
// prompt. Where the bundle cannot be written (a read-only install), tsx transpiles in memory as before.
//
// Start-up (docs/benchmarks.md, `npm run bench -- cli-startup`): this file is CommonJS (bin/package.json)
// and so is the bundle, because Node's ES module loader costs more to start than the whole CLI's own
// code; commander is bundled in rather than imported, which spares the CommonJS-to-ESM export scan;
// and the bundle runs through a V8 code cache kept next to it, so the functions a start needs are not
// compiled again. ssh2 stays outside, loaded only by `essh ssh`.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

// Node 22.1+ caches compiled code of everything loaded through require/import (ssh2 for `essh ssh`).
Module.enableCompileCache?.();

const root = path.resolve(__dirname, '..');
const entry = path.join(root, 'cli', 'main.ts');
const cacheDir = path.join(root, 'node_modules', '.cache', 'essh-cli');
const bundle = path.join(cacheDir, 'main.cjs');
const inputsFile = path.join(cacheDir, 'inputs.json');

/** The bundle's text and mtime, or null when a source is newer than it (or it is missing). */
function readFreshBundle() {
  let fd;
  try {
    fd = fs.openSync(bundle, 'r');
    // The mtime of the very file read: a rebuild renames a new file over the path, never rewrites it.
    const built = fs.fstatSync(fd);
    const inputs = JSON.parse(fs.readFileSync(inputsFile, 'utf8'));
    if (!inputs.every((input) => fs.statSync(path.resolve(root, input)).mtimeMs < built.mtimeMs)) return null;
    return { source: fs.readFileSync(fd, 'utf8'), stamp: `${built.mtimeMs}-${built.size}` };
  } catch {
    return null;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function buildBundle() {
  const esbuild = require('esbuild');
  const startedAt = (Date.now() - 100) / 1000;
  const result = esbuild.buildSync({
    absWorkingDir: root,
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // ssh2 (native parts, 50 ms to load) stays in node_modules, required from the cache folder inside it.
    external: ['ssh2'],
    // import() becomes require(): a vm.Script has no loader for import() without an experimental flag.
    supported: { 'dynamic-import': false },
    metafile: true,
    write: false,
    logLevel: 'silent',
  });
  fs.mkdirSync(cacheDir, { recursive: true });
  for (const old of fs.readdirSync(cacheDir)) if (old.endsWith('.v8cache')) fs.rmSync(path.join(cacheDir, old), { force: true });
  // Written aside and renamed, so a CLI starting at the same moment never reads half a bundle.
  const suffix = `.${process.pid}.tmp`;
  fs.writeFileSync(bundle + suffix, result.outputFiles[0].contents);
  fs.utimesSync(bundle + suffix, startedAt, startedAt);
  // This file too: its build options shape the bundle.
  const inputs = [...Object.keys(result.metafile.inputs), path.relative(root, __filename)];
  fs.writeFileSync(inputsFile + suffix, JSON.stringify(inputs));
  fs.renameSync(inputsFile + suffix, inputsFile);
  fs.renameSync(bundle + suffix, bundle);
}

/**
 * Runs the bundle with V8's code cache. The cache is named after the bundle's mtime and size, so it is
 * only ever offered to the bundle it was made from (V8 itself checks little more than the length), and
 * is written once, at exit, when it holds every function this start compiled.
 */
function runBundle({ source, stamp }) {
  const cacheFile = path.join(cacheDir, `main.${stamp}.v8cache`);
  let cachedData;
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {}
  const script = new vm.Script(Module.wrap(source), { filename: bundle, cachedData });
  if (cachedData === undefined || script.cachedDataRejected) {
    process.once('exit', () => {
      try {
        fs.writeFileSync(cacheFile + `.${process.pid}.tmp`, script.createCachedData());
        fs.renameSync(cacheFile + `.${process.pid}.tmp`, cacheFile);
      } catch {}
    });
  }
  const cli = { exports: {} };
  script.runInThisContext().call(cli.exports, cli.exports, Module.createRequire(bundle), cli, bundle, cacheDir);
  return cli.exports;
}

async function loadCli() {
  const fresh = readFreshBundle();
  if (fresh) return runBundle(fresh);
  try {
    buildBundle();
    const rebuilt = readFreshBundle();
    // Null only if a source changed while esbuild read it: tsx then runs what is on disk now.
    if (rebuilt) return runBundle(rebuilt);
  } catch {}
  const { register } = await import('tsx/esm/api');
  register();
  return import(require('node:url').pathToFileURL(entry).href);
}

loadCli()
  .then(({ main }) => main())
  .then(() => {
    // An attached session leaves stdin and sockets behind that would keep the process alive; the
    // output is flushed first.
    process.stdout.write('', () => process.exit(process.exitCode ?? 0));
  });
