// Which programs the tests and benchmarks start, read from their source, and whether
// scripts/requirements.tsv (the one list of programs and their Debian packages) has them. Used by
// test/setup-requirements.test.ts (every program started is listed) and test/support/programs-present.ts
// (a test file whose programs are missing stops with one line that names them).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const requirementsFile = path.join(projectRoot, 'scripts', 'requirements.tsv');

export interface Requirement {
  /** A program name, an absolute path (glob), or dpkg:PACKAGE. */
  check: string;
  pkg: string;
  uses: string[];
}

export function readRequirements(file = requirementsFile): Requirement[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((line) => {
      const [check = '', pkg = '', uses = ''] = line.split(/\s+/);
      return { check, pkg, uses: uses.split(',') };
    });
}

export interface ProgramStart {
  program: string;
  /** Project-relative file and 1-based line of the call or command line. */
  file: string;
  line: number;
}

export interface Scan {
  starts: ProgramStart[];
  /** Calls that start something the scan cannot name (neither a literal nor a known wrapper's parameter). */
  unknown: ProgramStart[];
}

// What starts a program, by how it is called: with the program as first argument (argv[0]), or with a
// shell command line as first argument. Wrappers defined in the scanned files (a function that passes
// its first parameter on as argv[0], or `promisify(execFile)`) are found and added per file.
const ARGV0_CALLS = new Set(['spawn', 'spawnSync', 'execFile', 'execFileSync', 'fork']);
const SHELL_CALLS = new Set(['exec', 'execSync']);
// Helpers whose first argument becomes a shell command line further down than the scan follows: the
// tmux pane of test/support/portal-terminal.ts runs `${command}; …` in /bin/sh.
const KNOWN_SHELL_WRAPPERS = new Set(['Terminal.start']);
// Programs the shell runs itself or that are not programs at all.
const SHELL_WORDS = new Set([
  'exit', 'echo', 'printf', 'cd', 'export', 'true', 'false', 'test', '[', 'if', 'then', 'else', 'elif', 'fi', 'for', 'while',
  'until', 'do', 'done', 'case', 'esac', 'read', 'set', 'unset', 'wait', 'kill', 'exec', 'eval', 'trap', 'shift', 'return', '{', '}',
  'local', ':', '.', 'command', 'type', 'source', 'complete', 'compgen',
]);

// --- source handling -------------------------------------------------------------------------------

/** The source with comments and regular-expression literals blanked out (same length, same lines). */
export function blankComments(src: string): string {
  const out = src.split('');
  let i = 0;
  let lastSignificant = '';
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' ';
  };
  const skipString = (quote: string): void => {
    i++;
    while (i < src.length && src[i] !== quote) {
      if (src[i] === '\\') i++;
      else if (quote === '`' && src[i] === '$' && src[i + 1] === '{') {
        i += 2;
        let depth = 1;
        while (i < src.length && depth > 0) {
          const c = src[i]!;
          if (c === "'" || c === '"' || c === '`') skipString(c);
          else if (c === '{') depth++;
          else if (c === '}') depth--;
          if (depth > 0) i++;
        }
      }
      i++;
    }
  };
  while (i < src.length) {
    const c = src[i]!;
    const next = src[i + 1];
    if (c === '/' && next === '/') {
      const end = src.indexOf('\n', i);
      blank(i, end < 0 ? src.length : end);
      i = end < 0 ? src.length : end;
    } else if (c === '/' && next === '*') {
      const end = src.indexOf('*/', i + 2);
      blank(i, end < 0 ? src.length : end + 2);
      i = end < 0 ? src.length : end + 2;
    } else if (c === "'" || c === '"' || c === '`') {
      skipString(c);
      i++;
      lastSignificant = 'x';
    } else if (c === '/' && !/[\w$)\]]/.test(lastSignificant)) {
      // A regular expression: up to the closing slash outside a character class.
      const start = i;
      let inClass = false;
      i++;
      while (i < src.length && src[i] !== '\n') {
        if (src[i] === '\\') i++;
        else if (src[i] === '[') inClass = true;
        else if (src[i] === ']') inClass = false;
        else if (src[i] === '/' && !inClass) break;
        i++;
      }
      blank(start + 1, i);
      i++;
      while (/[a-z]/.test(src[i] ?? '')) i++;
      lastSignificant = 'x';
    } else {
      if (!/\s/.test(c)) lastSignificant = c;
      // `return /re/`, `typeof /re/`: a keyword before a slash starts a regular expression.
      if (/\w/.test(c)) {
        const m = /^\w+/.exec(src.slice(i))![0];
        lastSignificant = ['return', 'typeof', 'case', 'in', 'of'].includes(m) ? '(' : 'x';
        i += m.length;
        continue;
      }
      i++;
    }
  }
  return out.join('');
}

/** `src` (comments already blanked) with the text of its string and template literals blanked too, but
 *  not the `${…}` code inside templates: where to look for calls. */
function blankStrings(src: string): string {
  const out = src.split('');
  const walk = (from: number, to: number): void => {
    for (let i = from; i < to; i++) {
      const c = src[i]!;
      if (c !== "'" && c !== '"' && c !== '`') continue;
      const end = stringEnd(src, i);
      for (let k = i + 1; k < end - 1; k++) if (out[k] !== '\n') out[k] = ' ';
      if (c === '`') {
        // Put the code of each ${…} back, and look inside it for strings in turn.
        for (let k = i + 1; k < end - 1; k++) {
          if (src[k] === '\\') k++;
          else if (src[k] === '$' && src[k + 1] === '{') {
            const close = bracketEnd(src, k + 1);
            for (let j = k; j < close; j++) out[j] = src[j]!;
            walk(k + 2, close - 1);
            k = close - 1;
          }
        }
      }
      i = end - 1;
    }
  };
  walk(0, src.length);
  return out.join('');
}

/** The end (index after) of the string or template literal starting at i. */
function stringEnd(src: string, i: number): number {
  const quote = src[i]!;
  i++;
  while (i < src.length && src[i] !== quote) {
    if (src[i] === '\\') i++;
    else if (quote === '`' && src[i] === '$' && src[i + 1] === '{') i = bracketEnd(src, i + 1) - 1;
    i++;
  }
  return i + 1;
}

/** The end (index after) of the bracket group opening at i: ( [ or {. */
function bracketEnd(src: string, i: number): number {
  let depth = 0;
  for (; i < src.length; i++) {
    const c = src[i]!;
    if (c === "'" || c === '"' || c === '`') {
      i = stringEnd(src, i) - 1;
    } else if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c) && --depth === 0) return i + 1;
  }
  return src.length;
}

/** The top-level, comma-separated parts of the bracket group opening at `open`. */
function splitGroup(src: string, open: number): string[] {
  const end = bracketEnd(src, open) - 1;
  const parts: string[] = [];
  let depth = 0;
  let from = open + 1;
  for (let i = open + 1; i < end; i++) {
    const c = src[i]!;
    if (c === "'" || c === '"' || c === '`') i = stringEnd(src, i) - 1;
    else if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) depth--;
    else if (c === ',' && depth === 0) {
      parts.push(src.slice(from, i).trim());
      from = i + 1;
    }
  }
  const last = src.slice(from, end).trim();
  if (last) parts.push(last);
  return parts;
}

// --- values: what an expression in the source stands for --------------------------------------------

/** What an expression yields, as far as the scan can tell. */
type Value =
  | { kind: 'text'; parts: (string | { expr: string })[] } // a string or template literal
  | { kind: 'argv'; items: Value[] } // an argument vector joined into one command line
  | { kind: 'lines'; items: Value[] } // command lines joined with ; or &&
  | { kind: 'choice'; items: Value[] } // a ? b : c
  | { kind: 'node' } // process.execPath: this Node.js
  | { kind: 'venv' } // a tool of the project's venv (scripts/setup.sh installs it)
  | { kind: 'essh' } // the checkout's own bin/essh, a shell script that runs this Node.js
  | { kind: 'param'; fn: string } // a parameter of the function `fn`
  | { kind: 'unknown'; expr: string };

interface FileContext {
  src: string;
  /** Where the expression being evaluated is: a name stands for its last definition before it. */
  at: number;
  /** Parameters of the functions in the file: name → functions that have it. */
  params: Map<string, string[]>;
}

function parseText(lit: string): Value {
  const quote = lit[0]!;
  const body = lit.slice(1, -1);
  if (quote !== '`') return { kind: 'text', parts: [body.replace(/\\(.)/g, '$1')] };
  const parts: (string | { expr: string })[] = [];
  let i = 0;
  let from = 0;
  while (i < body.length) {
    if (body[i] === '\\') i += 2;
    else if (body[i] === '$' && body[i + 1] === '{') {
      parts.push(body.slice(from, i));
      const end = bracketEnd(body, i + 1);
      parts.push({ expr: body.slice(i + 2, end - 1).trim() });
      i = from = end;
    } else i++;
  }
  parts.push(body.slice(from));
  return { kind: 'text', parts };
}

function evaluate(expr: string, ctx: FileContext, seen = new Set<string>()): Value {
  expr = expr.trim().replace(/\s+as\s+[\w.<>[\]]+$/, '');
  if (/^(['"`])[\s\S]*\1$/.test(expr) && stringEnd(expr, 0) === expr.length) return parseText(expr);
  if (expr === 'process.execPath') return { kind: 'node' };
  if (/toolPath\(|\.tools\/venv\/bin\//.test(expr)) return { kind: 'venv' };
  if (/^path\.join\([\s\S]*,\s*'essh'\)$/.test(expr)) return { kind: 'essh' };
  const q = /^q\(([\s\S]*)\)$/.exec(expr);
  if (q) return evaluate(q[1]!, ctx, seen);
  if (expr.startsWith('(') && bracketEnd(expr, 0) === expr.length) return evaluate(expr.slice(1, -1), ctx, seen);
  const joined = /^(\[[\s\S]*\])\s*(\.map\(q\))?\s*\.join\((['"`])(.*)\3\)$/.exec(expr);
  if (joined && bracketEnd(joined[1]!, 0) === joined[1]!.length) {
    const items = splitGroup(joined[1]!, 0).map((e) => evaluate(e.replace(/^\.\.\./, ''), ctx, seen));
    return /^\s*$/.test(joined[4]!) ? { kind: 'argv', items } : { kind: 'lines', items };
  }
  const ternary = /^[^?]+\?([\s\S]+):([\s\S]+)$/.exec(expr);
  if (ternary && !/[`'"]/.test(expr.slice(0, expr.indexOf('?')))) {
    return { kind: 'choice', items: [evaluate(ternary[1]!, ctx, seen), evaluate(ternary[2]!, ctx, seen)] };
  }
  if (/^[A-Za-z_$][\w$]*$/.test(expr) && !seen.has(expr)) {
    seen.add(expr);
    // The last `const NAME = …` before the use (a name may be bound in several functions).
    const all = [...ctx.src.matchAll(new RegExp(`\\b(?:const|let)\\s+${expr}\\s*(?::[^=]+)?=\\s*`, 'g'))];
    const before = all.filter((m) => m.index < ctx.at);
    const defs = (before.length ? before.slice(-1) : all).map((m) => {
      const from = m.index + m[0].length;
      let i = from;
      while (i < ctx.src.length && ctx.src[i] !== ';' && ctx.src[i] !== '\n') {
        const c = ctx.src[i]!;
        if ("'\"`".includes(c)) i = stringEnd(ctx.src, i);
        else if ('([{'.includes(c)) i = bracketEnd(ctx.src, i);
        else i++;
      }
      return evaluate(ctx.src.slice(from, i), ctx, seen);
    });
    if (defs.length === 1) return defs[0]!;
    if (defs.length > 1) return { kind: 'choice', items: defs };
    const fns = ctx.params.get(expr);
    if (fns?.length) return { kind: 'param', fn: fns.join('|') };
  }
  return { kind: 'unknown', expr };
}

// --- command lines ---------------------------------------------------------------------------------

const PLACEHOLDER = '\u0000';

/** Simple commands of a shell command line: their words, with `${…}` parts as placeholders. */
function shellCommands(v: Value, ctx: FileContext): { words: string[]; exprs: Value[] }[] {
  if (v.kind === 'lines' || v.kind === 'choice') return v.items.flatMap((item) => shellCommands(item, ctx));
  if (v.kind === 'argv') return [argvWords(v.items)];
  if (v.kind !== 'text') return [{ words: [PLACEHOLDER], exprs: [v] }];
  const exprs: Value[] = [];
  const text = v.parts.map((p) => (typeof p === 'string' ? p : (exprs.push(evaluate(p.expr, ctx)), PLACEHOLDER))).join('');
  const commands: { words: string[]; exprs: Value[] }[] = [];
  let n = 0;
  for (const piece of text.split(/;|&&|\|\||\||&|\n|\$\(|`|\(|\)/)) {
    const words = (piece.match(/'[^']*'|"[^"]*"|\S+/g) ?? []).map((w) => w.replace(/^(['"])([\s\S]*)\1$/, '$2'));
    const placeholders = words.join(' ').split(PLACEHOLDER).length - 1;
    commands.push({ words, exprs: exprs.slice(n, n + placeholders) });
    n += placeholders;
  }
  return commands;
}

/** An argument vector as words: literal arguments as they are, anything else as a placeholder. */
function argvWords(items: Value[]): { words: string[]; exprs: Value[] } {
  const words: string[] = [];
  const exprs: Value[] = [];
  for (const item of items) {
    if (item.kind === 'text' && item.parts.length === 1) words.push(item.parts[0] as string);
    else {
      words.push(PLACEHOLDER);
      exprs.push(item);
    }
  }
  return { words, exprs };
}

/** The programs an argument vector starts: argv[0], and what launchers such as sshpass or sh -c run. */
function programsOfArgv(words: string[], exprs: Value[], ctx: FileContext): { programs: string[]; unknown: string[] } {
  const programs: string[] = [];
  const unknown: string[] = [];
  let k = 0;
  // Skip assignments and redirections before the program.
  while (k < words.length && (/^\w+=/.test(words[k]!) || /^\d*[<>]/.test(words[k]!))) {
    if (/^\d*[<>]&?$/.test(words[k]!)) k++;
    k++;
  }
  const program = words[k];
  if (program === undefined) return { programs, unknown };
  if (program === PLACEHOLDER) {
    const v = exprs[placeholderIndexIn(words, k)];
    return v ? programsOfValueAsArgv0(v, ctx) : { programs, unknown };
  }
  if (SHELL_WORDS.has(program)) {
    // `exec prog`, `kill` etc.: nothing of their own to install; look at what follows `exec`.
    return program === 'exec' ? programsOfArgv(words.slice(k + 1), exprs.slice(placeholderIndexIn(words, k + 1)), ctx) : { programs, unknown };
  }
  programs.push(program);
  const rest = words.slice(k + 1);
  const restExprs = exprs.slice(placeholderIndexIn(words, k + 1));
  const sub = (from: number) => programsOfArgv(rest.slice(from), restExprs.slice(placeholderIndexIn(rest, from)), ctx);
  const merge = (r: { programs: string[]; unknown: string[] }) => (programs.push(...r.programs), unknown.push(...r.unknown));
  if (['sshpass', 'env', 'nohup', 'setsid', 'timeout', 'nice', 'sudo'].includes(program)) {
    // Their options (and the option values of sshpass and timeout), then the program they run.
    let j = 0;
    while (j < rest.length && (rest[j]!.startsWith('-') || /^\w+=/.test(rest[j]!) || (program === 'timeout' && /^\d/.test(rest[j]!)))) {
      if (program === 'sshpass' && /^-[fdpP]$/.test(rest[j]!)) j++;
      j++;
    }
    merge(sub(j));
  } else if (['sh', 'bash', 'script'].includes(program)) {
    // `-c COMMAND` (also bundled, as in script -qec): the command line is scanned in turn.
    const c = rest.findIndex((w) => /^-[a-z]*c[a-z]*$/.test(w));
    if (c >= 0 && rest[c + 1] !== undefined) {
      const word = rest[c + 1]!;
      const v = word === PLACEHOLDER ? restExprs[placeholderIndexIn(rest, c + 1)] : { kind: 'text' as const, parts: [word] };
      if (v) merge(programsOfCommandLine(v, ctx));
    }
  }
  return { programs, unknown };
}

/** How many placeholders the first `upTo` words hold: the index of the next one's expression. */
function placeholderIndexIn(words: string[], upTo: number): number {
  return words.slice(0, upTo).join(' ').split(PLACEHOLDER).length - 1;
}

function programsOfValueAsArgv0(v: Value, ctx: FileContext): { programs: string[]; unknown: string[] } {
  switch (v.kind) {
    case 'text':
      return v.parts.length === 1 ? { programs: [(v.parts[0] as string).trim()], unknown: [] } : { programs: [], unknown: [String(v.parts.map((p) => (typeof p === 'string' ? p : `\${${p.expr}}`)).join(''))] };
    case 'choice': {
      const rs = v.items.map((item) => programsOfValueAsArgv0(item, ctx));
      return { programs: rs.flatMap((r) => r.programs), unknown: rs.flatMap((r) => r.unknown) };
    }
    case 'node':
    case 'venv':
    case 'essh':
    case 'param':
      return { programs: [], unknown: [] };
    default:
      return { programs: [], unknown: [v.kind === 'unknown' ? v.expr : v.kind] };
  }
}

function programsOfCommandLine(v: Value, ctx: FileContext): { programs: string[]; unknown: string[] } {
  if (v.kind === 'node' || v.kind === 'venv' || v.kind === 'essh' || v.kind === 'param') return { programs: [], unknown: [] };
  if (v.kind === 'unknown') return { programs: [], unknown: [v.expr] };
  const programs: string[] = [];
  const unknown: string[] = [];
  for (const { words, exprs } of shellCommands(v, ctx)) {
    const r = programsOfArgv(words, exprs, ctx);
    programs.push(...r.programs);
    unknown.push(...r.unknown);
  }
  return { programs, unknown };
}

// --- files -----------------------------------------------------------------------------------------

interface Wrappers {
  argv0: Set<string>;
  shell: Set<string>;
}

/** The child_process functions a file imports, under the names it uses for them. */
function childProcessImports(src: string): Wrappers {
  const argv0 = new Set<string>();
  const shell = new Set<string>();
  const code = blankStrings(src);
  for (const m of src.matchAll(/\bimport\s*\{([^}]*)\}\s*from\s*['"](?:node:)?child_process['"]/g)) {
    if (!code.startsWith('import', m.index)) continue;
    for (const spec of m[1]!.split(',')) {
      const [orig, local] = spec.trim().split(/\s+as\s+/);
      if (orig && ARGV0_CALLS.has(orig)) argv0.add(local ?? orig);
      if (orig && SHELL_CALLS.has(orig)) shell.add(local ?? orig);
    }
  }
  for (const m of src.matchAll(/\bimport\s+(?:\*\s+as\s+)?(\w+)\s+from\s*['"](?:node:)?child_process['"]/g)) {
    if (!code.startsWith('import', m.index)) continue;
    for (const fn of ARGV0_CALLS) argv0.add(`${m[1]}.${fn}`);
    for (const fn of SHELL_CALLS) shell.add(`${m[1]}.${fn}`);
  }
  return { argv0, shell };
}

/**
 * What starts programs in `src`: the child_process functions it imports, `promisify` of them, and the
 * functions it defines that pass their first parameter on as argv[0] or as the command line of
 * `script -c` / `sh -c`.
 */
function wrappersDefinedIn(src: string): Wrappers {
  const { argv0, shell } = childProcessImports(src);
  const callRe = /(?<![\w$.])((?:[\w$]+\.)?[\w$]+)\s*\(/g;
  const code = blankStrings(src);
  for (const m of code.matchAll(/\b(?:const|let)\s+(\w+)\s*=\s*promisify\(\s*([\w.]+)\s*\)/g)) {
    if (argv0.has(m[2]!)) argv0.add(m[1]!);
    if (shell.has(m[2]!)) shell.add(m[1]!);
  }
  for (const { name, params, body } of functionsIn(src)) {
    const first = params[0];
    if (!first) continue;
    for (const call of code.slice(body[0], body[1]).matchAll(callRe)) {
      const open = body[0] + call.index + call[0].length - 1;
      const args = splitGroup(src, open);
      if (args[0] === first) {
        if (argv0.has(call[1]!)) argv0.add(name);
        if (shell.has(call[1]!)) shell.add(name);
      } else if (argv0.has(call[1]!) && /^['"](script|sh|bash)['"]$/.test(args[0] ?? '') && args[1]?.startsWith('[')) {
        // spawn('script', ['-qfec', PARAM, …]): the parameter is a command line.
        const items = splitGroup(args[1], 0);
        const c = items.findIndex((w) => /^['"]-[a-z]*c[a-z]*['"]$/.test(w));
        if (c >= 0 && items[c + 1] === first) shell.add(name);
      }
    }
  }
  return { argv0, shell };
}

/** Function declarations and arrow functions bound to a name: name, parameter names, body range. */
function functionsIn(src: string): { name: string; params: string[]; body: [number, number] }[] {
  const fns: { name: string; params: string[]; body: [number, number] }[] = [];
  const re = /\bfunction\s*\*?\s*(\w+)\s*(?:<[^>]*>)?\s*\(|\b(?:const|let)\s+(\w+)\s*=\s*(?:async\s*)?\(|^\s*(?:static\s+)?(?:async\s+)?(\w+)\s*\((?=[^)]*\)\s*(?::[^{]+)?\{)/gm;
  const code = blankStrings(src);
  for (const m of src.matchAll(re)) {
    if (code.slice(m.index, m.index + m[0].length) !== m[0]) continue;
    const name = m[1] ?? m[2] ?? m[3]!;
    if (['if', 'for', 'while', 'switch', 'catch', 'return'].includes(name)) continue;
    const open = m.index + m[0].length - 1;
    const close = bracketEnd(src, open);
    const params = splitGroup(src, open).map((p) => /^(?:\.\.\.)?(\w+)/.exec(p)?.[1] ?? '').filter(Boolean);
    // The body: after `=>`, or the `{` that ends its line (a return type may hold braces too).
    let i = close;
    while (i < src.length && !(src[i] === '{' && /^[ \t]*\n/.test(src.slice(i + 1))) && src.slice(i, i + 2) !== '=>' && src[i] !== ';') i++;
    if (src.slice(i, i + 2) === '=>') {
      i += 2;
      while (/\s/.test(src[i] ?? '')) i++;
    }
    let end: number;
    if (src[i] === '{' || src[i] === '(' || src[i] === '[') end = bracketEnd(src, i);
    else {
      end = i;
      while (end < src.length && src[end] !== ';' && src[end] !== '\n') end = '([{'.includes(src[end]!) ? bracketEnd(src, end) : end + 1;
    }
    fns.push({ name, params, body: [i, end] });
  }
  return fns;
}

/** Local modules a file imports (test/ and bench/ helpers), with the names it takes from each. */
function localImports(file: string, src: string): { file: string; names: Map<string, string> }[] {
  const out: { file: string; names: Map<string, string> }[] = [];
  const code = blankStrings(src);
  for (const m of src.matchAll(/\bimport\s+(?:type\s+)?(?:\{([^}]*)\}|\w+)?\s*(?:from\s*)?['"](\.{1,2}\/[^'"]+)['"]/g)) {
    if (!code.startsWith('import', m.index)) continue;
    const target = path.resolve(path.dirname(file), m[2]!.replace(/\.js$/, '.ts'));
    if (!target.startsWith(path.join(projectRoot, 'test') + path.sep) && !target.startsWith(path.join(projectRoot, 'bench') + path.sep)) continue;
    if (!existsSync(target)) continue;
    const names = new Map<string, string>();
    for (const spec of (m[1] ?? '').split(',')) {
      const [orig, local] = spec.replace(/^\s*type\s+/, '').trim().split(/\s+as\s+/);
      if (orig) names.set(local ?? orig, orig);
    }
    out.push({ file: target, names });
  }
  return out;
}

const sourceCache = new Map<string, string>();
function source(file: string): string {
  let src = sourceCache.get(file);
  if (src === undefined) sourceCache.set(file, (src = blankComments(readFileSync(file, 'utf8'))));
  return src;
}

/** The programs one file starts itself (not through the helpers it imports). */
export function scanFile(file: string): Scan {
  return scanSource(source(file), file);
}

/** The programs a piece of TypeScript starts; `file` names it and resolves its local imports. */
export function scanSource(text: string, file = path.join(projectRoot, 'test', 'fixture.ts')): Scan {
  const src = text === sourceCache.get(file) ? text : blankComments(text);
  const rel = path.relative(projectRoot, file);
  const lineOf = (index: number) => src.slice(0, index).split('\n').length;
  const own = wrappersDefinedIn(src);
  const argv0 = new Set(own.argv0);
  const shell = new Set([...own.shell, ...KNOWN_SHELL_WRAPPERS]);
  for (const imp of localImports(file, src)) {
    const theirs = wrappersDefinedIn(source(imp.file));
    for (const [local, orig] of imp.names) {
      if (theirs.argv0.has(orig)) argv0.add(local);
      if (theirs.shell.has(orig)) shell.add(local);
    }
  }
  const params = new Map<string, string[]>();
  for (const fn of functionsIn(src)) for (const p of fn.params) params.set(p, [...(params.get(p) ?? []), fn.name]);
  const ctx: FileContext = { src, params, at: 0 };
  const scan: Scan = { starts: [], unknown: [] };
  for (const call of blankStrings(src).matchAll(/(?<![\w$.])((?:[\w$]+\.)?[\w$]+)\s*\(/g)) {
    const name = call[1]!;
    ctx.at = call.index;
    const isArgv0 = argv0.has(name);
    const isShell = shell.has(name);
    if (!isArgv0 && !isShell) continue;
    // A definition (`function run(`, `async start(`) is not a call.
    const before = src.slice(Math.max(0, call.index - 20), call.index);
    if (/\b(function\s*\*?|async|static)\s*$/.test(before)) continue;
    const open = call.index + call[0].length - 1;
    if (src.slice(open + 1).trimStart().startsWith(')')) continue;
    const first = splitGroup(src, open)[0];
    if (!first) continue;
    const value = evaluate(first, ctx);
    // Inside a wrapper, the wrapper's own parameter: its callers are scanned instead.
    if (value.kind === 'param' && value.fn.split('|').some((fn) => argv0.has(fn) || shell.has(fn))) continue;
    let r: { programs: string[]; unknown: string[] };
    if (isArgv0) {
      r = programsOfValueAsArgv0(value, ctx);
      // argv[0] with its arguments: launchers (sshpass, sh -c, script -c) start more.
      const args = splitGroup(src, open)[1];
      if (args?.startsWith('[') && r.programs.length === 1) {
        const items = splitGroup(args, 0).map((e) => evaluate(e.replace(/^\.\.\./, ''), ctx));
        const { words, exprs } = argvWords([{ kind: 'text', parts: [r.programs[0]!] }, ...items]);
        r = programsOfArgv(words, exprs, ctx);
      }
    } else {
      r = programsOfCommandLine(value, ctx);
    }
    const line = lineOf(call.index);
    for (const p of r.programs) {
      // /usr/bin/NAME is NAME; ./a.out is something the test made itself.
      const program = p.startsWith('/') ? path.basename(p) : p;
      if (program !== PLACEHOLDER && !program.includes('/') && program) scan.starts.push({ program, file: rel, line });
    }
    for (const u of r.unknown) scan.unknown.push({ program: u, file: rel, line });
  }
  return scan;
}

/** The programs a file starts, itself and through the test/ and bench/ helpers it imports. */
export function scanWithImports(file: string, done = new Set<string>()): Scan {
  const scan: Scan = { starts: [], unknown: [] };
  if (done.has(file)) return scan;
  done.add(file);
  const own = scanFile(file);
  scan.starts.push(...own.starts);
  scan.unknown.push(...own.unknown);
  for (const imp of localImports(file, source(file))) {
    const theirs = scanWithImports(imp.file, done);
    scan.starts.push(...theirs.starts);
    scan.unknown.push(...theirs.unknown);
  }
  return scan;
}

/** Every .ts file under test/ and bench/. */
export function testAndBenchFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
      const p = path.join(dir, e.name);
      return e.isDirectory() ? walk(p) : e.name.endsWith('.ts') ? [p] : [];
    });
  return ['test', 'bench'].flatMap((d) => walk(path.join(projectRoot, d))).sort();
}

/** Whether a program is on PATH (as the set-up script checks it: `command -v`). */
export function onPath(program: string): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v "$1"', 'sh', program], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The line a test file stops with when programs it starts are missing, or undefined when all are there.
 */
export function missingProgramsMessage(testFile: string): string | undefined {
  const listed = new Map(readRequirements().map((r) => [r.check, r.pkg]));
  const programs = [...new Set(scanWithImports(testFile).starts.map((s) => s.program))];
  const missing = programs.filter((p) => !onPath(p));
  if (missing.length === 0) return undefined;
  const packages = [...new Set(missing.map((p) => listed.get(p)).filter(Boolean))];
  const unlisted = missing.filter((p) => !listed.has(p));
  return `${path.relative(projectRoot, testFile)} needs ${missing.join(', ')}, not installed here: ` +
    (packages.length ? `\`bash scripts/setup.sh --for-tests\` installs Debian's ${packages.join(', ')} (npm test runs it)` : '') +
    (unlisted.length ? `${packages.length ? '; ' : ''}${unlisted.join(', ')} has no row in scripts/requirements.tsv` : '');
}
