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
// compiled again. ssh2 is not in it: `essh ssh` alone loads it, from a second bundle with a code cache
// of its own (ssh2.cjs, built on the first `essh ssh`): loading ssh2 from node_modules file by file and
// compiling its handshake on every run cost 30 ms of CPU more (docs/benchmarks.md), on the way to the
// prompt. Its native addons stay in node_modules. On any failure there ssh2 comes from node_modules.
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
const ssh2Bundle = path.join(cacheDir, 'ssh2.cjs');
const ssh2InputsFile = path.join(cacheDir, 'ssh2-inputs.json');
/** The name esbuild gives the ssh2 bundle's entry, which is no file. */
const SSH2_ENTRY = 'ssh2-entry.js';

/** A bundle's text and mtime, or null when a source is newer than it (or it is missing). */
function readFreshBundle(bundle, inputsFile) {
  let fd;
  try {
    fd = fs.openSync(bundle, 'r');
    // The mtime of the very file read: a rebuild renames a new file over the path, never rewrites it.
    const built = fs.fstatSync(fd);
    const inputs = JSON.parse(fs.readFileSync(inputsFile, 'utf8'));
    if (!inputs.every((input) => fs.statSync(path.resolve(root, input)).mtimeMs < built.mtimeMs)) return null;
    return { bundle, source: fs.readFileSync(fd, 'utf8'), stamp: `${built.mtimeMs}-${built.size}` };
  } catch {
    return null;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Writes a bundle and the list of its inputs. Each file is written aside and renamed, so a CLI starting
 * at the same moment never reads half a bundle; the bundle's mtime is set to when its build began.
 */
function writeBundle(bundle, inputsFile, contents, inputs, startedAt) {
  fs.mkdirSync(cacheDir, { recursive: true });
  const name = path.basename(bundle, '.cjs');
  for (const old of fs.readdirSync(cacheDir)) if (old.startsWith(`${name}.`) && old.endsWith('.v8cache')) fs.rmSync(path.join(cacheDir, old), { force: true });
  const suffix = `.${process.pid}.tmp`;
  fs.writeFileSync(bundle + suffix, contents);
  fs.utimesSync(bundle + suffix, startedAt, startedAt);
  // This file too: its build options shape the bundle.
  fs.writeFileSync(inputsFile + suffix, JSON.stringify([...inputs, path.relative(root, __filename)]));
  fs.renameSync(inputsFile + suffix, inputsFile);
  fs.renameSync(bundle + suffix, bundle);
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
  writeBundle(bundle, inputsFile, result.outputFiles[0].contents, Object.keys(result.metafile.inputs), startedAt);
}

/**
 * ssh2 and its dependencies in one bundle. Their native addons (ssh2's crypto binding, cpu-features)
 * stay where npm built them: esbuild leaves each `require("./x.node")` as written, relative to the
 * file it was in, so each is made absolute here from the metafile, which says which file had it.
 */
function buildSsh2Bundle() {
  const esbuild = require('esbuild');
  const startedAt = (Date.now() - 100) / 1000;
  const result = esbuild.buildSync({
    absWorkingDir: root,
    stdin: { contents: "module.exports = require('ssh2');", resolveDir: root, sourcefile: SSH2_ENTRY },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['*.node'],
    metafile: true,
    write: false,
    logLevel: 'silent',
  });
  let text = result.outputFiles[0].text;
  const natives = new Map();
  for (const [file, input] of Object.entries(result.metafile.inputs)) {
    for (const imported of input.imports) {
      if (!imported.external || !imported.path.endsWith('.node')) continue;
      const absolute = path.resolve(root, path.dirname(file), imported.path);
      if (natives.has(imported.path) && natives.get(imported.path) !== absolute) throw new Error(`two native addons named ${imported.path}`);
      natives.set(imported.path, absolute);
    }
  }
  for (const [spec, absolute] of natives) text = text.split(`require(${JSON.stringify(spec)})`).join(`require(${JSON.stringify(absolute)})`);
  const inputs = Object.keys(result.metafile.inputs).filter((input) => input !== SSH2_ENTRY);
  writeBundle(ssh2Bundle, ssh2InputsFile, text, [...inputs, ...[...natives.values()].map((n) => path.relative(root, n))], startedAt);
}

/** `require('ssh2')` for the CLI's bundle: the ssh2 bundle (built here on first use), else node_modules'. */
function requireSsh2(fallback) {
  try {
    let fresh = readFreshBundle(ssh2Bundle, ssh2InputsFile);
    if (!fresh) {
      buildSsh2Bundle();
      fresh = readFreshBundle(ssh2Bundle, ssh2InputsFile);
    }
    if (fresh) return runBundle(fresh, Module.createRequire(ssh2Bundle));
  } catch {}
  return fallback('ssh2');
}

/**
 * Runs the bundle with V8's code cache. The cache is named after the bundle's mtime and size, so it is
 * only ever offered to the bundle it was made from (V8 itself checks little more than the length), and
 * is written once, at exit, when it holds every function this start compiled.
 */
function runBundle({ bundle, source, stamp }, bundleRequire) {
  const cacheFile = path.join(cacheDir, `${path.basename(bundle, '.cjs')}.${stamp}.v8cache`);
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
  const loaded = { exports: {} };
  script.runInThisContext().call(loaded.exports, loaded.exports, bundleRequire, loaded, bundle, cacheDir);
  return loaded.exports;
}

/** The require of the CLI's bundle: ssh2 from its own bundle, the rest (Node's modules) as usual. */
function cliRequire() {
  const plain = Module.createRequire(bundle);
  let ssh2;
  return Object.assign((id) => (id === 'ssh2' ? (ssh2 ??= requireSsh2(plain)) : plain(id)), plain);
}

async function loadCli() {
  const fresh = readFreshBundle(bundle, inputsFile);
  if (fresh) return runBundle(fresh, cliRequire());
  try {
    buildBundle();
    const rebuilt = readFreshBundle(bundle, inputsFile);
    // Null only if a source changed while esbuild read it: tsx then runs what is on disk now.
    if (rebuilt) return runBundle(rebuilt, cliRequire());
  } catch {}
  const { register } = await import('tsx/esm/api');
  register();
  return import(require('node:url').pathToFileURL(entry).href);
}

if (require.main === module) {
  loadCli()
    .then(({ main }) => main())
    .then(() => {
      // An attached session leaves stdin and sockets behind that would keep the process alive; the
      // output is flushed first.
      process.stdout.write('', () => process.exit(process.exitCode ?? 0));
    });
} else {
  // Required, not run: for test/cli-bundle.test.ts, which checks the ssh2 bundle on its own.
  module.exports = { requireSsh2 };
}
