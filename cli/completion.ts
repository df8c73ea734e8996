import type { Command, Option } from 'commander';

/**
 * Shell completion scripts made from the commander program itself (its commands, options, option
 * choices and arguments), so they never drift from what essh accepts. They are static shell: a Tab
 * runs no Node.js (completion libraries such as tabtab or omelette call the program back on every
 * Tab, a ~100 ms start each time). An option whose value is `<file>` completes file names; one with
 * choices (`--state`) completes those.
 */

interface Node {
  /** Command path from the root, without the program name: '' for essh itself, 'log-drains list'. */
  path: string;
  cmd: Command;
  subcommands: { name: string; description: string }[];
  options: Option[];
}

function walk(cmd: Command, prefix = ''): Node[] {
  const help = cmd.createHelp();
  const subs = help.visibleCommands(cmd);
  const node: Node = {
    path: prefix,
    cmd,
    subcommands: subs.flatMap((c) => [c.name(), ...c.aliases()].map((name) => ({ name, description: c.summary() || c.description() }))),
    options: help.visibleOptions(cmd),
  };
  return [node, ...subs.filter((c) => c.name() !== 'help').flatMap((c) => walk(c, prefix ? `${prefix} ${c.name()}` : c.name()))];
}

const flagsOf = (o: Option) => [o.short, o.long].filter((f): f is string => Boolean(f));
const takesValue = (o: Option) => o.required || o.optional;
const isFile = (o: Option) => /<file>|\[file\]/.test(o.flags);
/** Single-quoted for the shell. */
const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function bashCompletion(program: Command): string {
  const nodes = walk(program);
  const name = program.name();
  const fn = `_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
  const caseOf = (pick: (n: Node) => string) =>
    nodes.map((n) => `    ${sq(n.path)}) ${pick(n)} ;;`).join('\n');
  const valueOpts = (n: Node) => n.options.filter(takesValue).flatMap(flagsOf).join(' ');
  const valueCases = nodes.flatMap((n) =>
    n.options.filter(takesValue).map((o) => {
      const flags = flagsOf(o).map((f) => sq(`${n.path}|${f}`)).join('|');
      if (o.argChoices) return `    ${flags}) COMPREPLY=($(compgen -W ${sq(o.argChoices.join(' '))} -- "$cur")) ;;`;
      if (isFile(o)) return `    ${flags}) COMPREPLY=($(compgen -f -- "$cur")) ;;`;
      return `    ${flags}) COMPREPLY=() ;;`;
    }),
  );
  const argChoices = (n: Node) => n.cmd.registeredArguments.flatMap((a) => a.argChoices ?? []);
  return `# bash completion for ${name} ${program.version() ?? ''}: made by \`${name} completion bash\` from the program itself.
# Load it with:  source <(${name} completion bash)   (in ~/.bashrc), or save it as
# ~/.local/share/bash-completion/completions/${name}
${fn}_subcommands() {
  case "$1" in
${caseOf((n) => `echo ${sq(n.subcommands.map((s) => s.name).join(' '))}`)}
  esac
}
${fn}_options() {
  case "$1" in
${caseOf((n) => `echo ${sq(n.options.flatMap(flagsOf).join(' '))}`)}
  esac
}
${fn}_value_options() {
  case "$1" in
${caseOf((n) => `echo ${sq(valueOpts(n))}`)}
  esac
}
${fn}_arg_choices() {
  case "$1" in
${caseOf((n) => `echo ${sq(argChoices(n).join(' '))}`)}
  esac
}
${fn}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]}
  local path='' word i skip=0 sub
  COMPREPLY=()
  # The command path so far (essh log-drains list …), skipping options and the values they take.
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=\${COMP_WORDS[i]}
    if ((skip)); then skip=0; continue; fi
    # After --: the remote command (essh ssh APP -- …), which is not essh's to complete.
    if [[ $word == -- ]]; then COMPREPLY=($(compgen -f -- "$cur")); return 0; fi
    if [[ $word == -* ]]; then
      [[ $word != *=* && " $(${fn}_value_options "$path") " == *" $word "* ]] && skip=1
      continue
    fi
    for sub in $(${fn}_subcommands "$path"); do
      if [[ $sub == "$word" ]]; then path=\${path:+$path }$word; break; fi
    done
  done
  if ((skip)); then
    case "$path|$prev" in
${valueCases.join('\n')}
    esac
    return 0
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(${fn}_options "$path")" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(${fn}_subcommands "$path") $(${fn}_arg_choices "$path")" -- "$cur"))
  fi
  return 0
}
complete -F ${fn} ${name}
`;
}

/** Quoted for a zsh _arguments spec inside single quotes: brackets and colons escaped. */
const zdesc = (s: string) => s.replace(/\\/g, '\\\\').replace(/'/g, `'\\''`).replace(/([[\]:])/g, '\\$1');

export function zshCompletion(program: Command): string {
  const nodes = walk(program);
  const name = program.name();
  const fnOf = (p: string) => `_${name}${p ? '_' + p.replace(/[^A-Za-z0-9]+/g, '_') : ''}`.replace(/[^A-Za-z0-9_]/g, '_');
  const optionSpecs = (n: Node) =>
    n.options.map((o) => {
      const flags = flagsOf(o);
      // An option excludes its other spelling, and the options that set the same value (-t and -T).
      const rivals = n.options.filter((r) => r.attributeName() === o.attributeName()).flatMap(flagsOf);
      let value = '';
      if (takesValue(o)) {
        const label = (/[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1] ?? 'value').replace(/:/g, '');
        const action = o.argChoices ? `(${o.argChoices.join(' ')})` : isFile(o) ? '_files' : ' ';
        value = `:${label}:${action}`;
      }
      const spec = `[${zdesc(o.description)}]${value}'`;
      const exclusive = rivals.length > 1 ? `(${rivals.join(' ')})` : '';
      return flags.length > 1 ? `'${exclusive}'{${flags.join(',')}}'${spec}` : `'${exclusive}${flags[0]!}${spec}`;
    });
  const argSpecs = (n: Node) =>
    n.cmd.registeredArguments.map((a) => {
      const label = a.name().replace(/:/g, '');
      const action = a.argChoices ? `(${a.argChoices.join(' ')})` : ' ';
      return a.variadic ? `'*::${label}:_normal'` : `'${a.required ? '' : ':'}:${label}:${action}'`;
    });
  const functions = nodes.map((n) => {
    const fn = fnOf(n.path);
    if (n.subcommands.length) {
      const list = n.subcommands.map((s) => `    ${sq(`${s.name.replace(/:/g, '\\:')}:${s.description}`)}`).join('\n');
      const dispatch = n.subcommands
        .filter((s) => s.name !== 'help')
        .map((s) => `        ${s.name}) ${fnOf(n.path ? `${n.path} ${s.name}` : s.name)} ;;`)
        .join('\n');
      return `${fn}() {
  local curcontext=$curcontext state line
  typeset -A opt_args
  local -a commands
  commands=(
${list}
  )
  _arguments -C \\
${optionSpecs(n).map((s) => `    ${s} \\`).join('\n')}
    '1: :->command' \\
    '*:: :->argument'
  case $state in
    command) _describe -t commands '${zdesc(n.path ? `${name} ${n.path}` : name)} command' commands ;;
    argument)
      case $line[1] in
${dispatch}
        help) _describe -t commands 'command' commands ;;
      esac
      ;;
  esac
}`;
    }
    const specs = [...optionSpecs(n), ...argSpecs(n)];
    return `${fn}() {
  _arguments -s -S \\
${specs.map((s) => `    ${s}`).join(' \\\n')}
}`;
  });
  return `#compdef ${name}
# zsh completion for ${name} ${program.version() ?? ''}: made by \`${name} completion zsh\` from the program itself.
# Load it with:  source <(${name} completion zsh)   (in ~/.zshrc, after compinit), or save it as _${name}
# in a directory of your $fpath.
${functions.join('\n\n')}

if [[ $funcstack[1] == ${fnOf('')} ]]; then
  ${fnOf('')} "$@"
else
  compdef ${fnOf('')} ${name}
fi
`;
}
