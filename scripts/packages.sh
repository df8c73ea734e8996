#!/usr/bin/env bash
# Installs the Debian packages of the programs in scripts/requirements.tsv that are missing, for the
# given uses (start, test, postgres, bench): `bash scripts/packages.sh start test`. Quiet and quick when
# nothing is missing; one `apt-get install` otherwise (as root, or through sudo). Where nothing can be
# installed (no apt-get, no root and no sudo) it names what is missing in one line and leaves it at that:
# the tests that need a missing program then stop with one line of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS_DIR=$ROOT/.tools
groups=" $* "
say() { echo "essh setup: $*" >&2; }

present() {
  case $1 in
    dpkg:*) [ "$(dpkg-query -W -f='${Status}' "${1#dpkg:}" 2>/dev/null)" = "install ok installed" ] ;;
    /*) compgen -G "$1" >/dev/null ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
# Whether a row's `for` column asks for one of the uses given.
wanted() {
  local use
  for use in ${2//,/ }; do
    [[ $groups == *" $use "* ]] && return 0
    if [ "$use" = test-if-named ] && [[ $groups == *" test "* ]] && grep -rqwF -- "$1" test; then return 0; fi
  done
  return 1
}

engine_answers=
docker info >/dev/null 2>&1 && engine_answers=1
packages=() programs=()
while read -r check package uses _; do
  case $check in '' | \#*) continue ;; esac
  wanted "$check" "$uses" || continue
  # A Docker engine that answers will do, however it was installed (or wherever it runs).
  if [ "$package" = docker.io ] && [ -n "$engine_answers" ]; then continue; fi
  # A venv that exists, or a python3 that can make one, needs no python3-venv.
  if [ "$package" = python3-venv ] && { [ -x "$TOOLS_DIR/venv/bin/pip" ] || python3 -c 'import ensurepip' 2>/dev/null; }; then continue; fi
  present "$check" && continue
  programs+=("$check")
  [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
done < scripts/requirements.tsv
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo); else as_root=(none); fi
if ! command -v apt-get >/dev/null 2>&1 || [ "${as_root[*]}" = none ]; then
  say "missing: ${programs[*]} (Debian packages: ${packages[*]}); install them as root — the tests that need them will say so"
  exit 0
fi
mkdir -p "$TOOLS_DIR"
say "installing Debian packages: ${packages[*]}"
{ "${as_root[@]}" apt-get update -qq && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } \
  >"$TOOLS_DIR/apt.log" 2>&1 || { cat "$TOOLS_DIR/apt.log" >&2; exit 1; }
