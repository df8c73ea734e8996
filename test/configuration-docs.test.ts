// docs/configuration.md lists every ESSH_* environment variable essh reads. Read at run time from the
// sources (every .ts/.js outside test/, bench/ and tooling: `process.env.ESSH_X`, `env.ESSH_X`,
// `env['ESSH_X']`, and the keys of lib/config.ts's schema) and from the doc's tables, so a variable
// added anywhere without its row fails here. The benchmarks' own variables are in docs/benchmarks.md.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/config.js';

const NOT_SOURCES = new Set(['node_modules', 'test', 'bench', 'dist', 'coverage']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name.startsWith('.') || NOT_SOURCES.has(entry.name) ? [] : sourceFiles(full);
    return /\.(ts|js|mjs|cjs)$/.test(entry.name) && !entry.name.endsWith('.d.ts') ? [full] : [];
  });
}

/** Variable → the files that read it. */
function variablesRead(): Map<string, string[]> {
  const read = new Map<string, string[]>();
  const note = (name: string, file: string) => read.set(name, [...new Set([...(read.get(name) ?? []), path.relative(projectRoot, file)])]);
  for (const file of sourceFiles(projectRoot)) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\benv(?:\.|\[\s*['"`])(ESSH_[A-Z0-9_]+)/g)) note(m[1]!, file);
  }
  const config = path.join(projectRoot, 'lib', 'config.ts');
  const schema = /const envSchema = z\.object\(\{([\s\S]*?)\n\}\);/.exec(readFileSync(config, 'utf8'));
  if (!schema) throw new Error('lib/config.ts no longer has `const envSchema = z.object({…});`: update this test to find the variables it reads');
  for (const m of schema[1]!.matchAll(/^\s*(ESSH_[A-Z0-9_]+)\s*:/gm)) note(m[1]!, config);
  return read;
}

/** Every variable named in the first column of a table row of docs/configuration.md. */
function variablesDocumented(): Set<string> {
  const doc = readFileSync(path.join(projectRoot, 'docs', 'configuration.md'), 'utf8');
  const names = doc.split('\n')
    .filter((line) => line.startsWith('|'))
    .flatMap((line) => [...(line.split('|')[1] ?? '').matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]!));
  return new Set(names);
}

describe('docs/configuration.md', () => {
  const read = variablesRead();
  const documented = variablesDocumented();

  it('finds what the code reads: the server configuration, the worker entry point and the CLI', () => {
    for (const name of ['ESSH_DATA_DIR', 'ESSH_JOURNAL_MAX_MB', 'ESSH_WORKER_ROLES', 'ESSH_DEMO_IMAGE', 'ESSH_TOKEN', 'ESSH_CONFIG']) {
      expect(read.has(name), `${name} should be found among the variables the code reads`).toBe(true);
    }
    expect(documented.has('ESSH_API_HOST') && documented.has('ESSH_API_PORT'), 'both names of a `A` / `B` row').toBe(true);
  });

  it('lists every ESSH_ variable the code reads', () => {
    const missing = [...read].filter(([name]) => !documented.has(name)).map(([name, files]) => `${name} (read in ${files.join(', ')})`);
    expect(missing, 'add a row for each to the table in docs/configuration.md: what it does and its default').toEqual([]);
  });
});
