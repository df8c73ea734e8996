#!/usr/bin/env bash
# Runs the whole suite N times in a row (default 5) and prints each run's wall time, pass/fail and failed
# files: the check that the suite passes on every run, not on most. Logs and per-file figures (wall and
# CPU seconds, ESSH_TEST_COST_LOG) go to a directory of their own, named at the end.
# Usage: bash scripts/flaky-check.sh [N] [vitest args…]   (e.g. `bash scripts/flaky-check.sh 3 test/scale-out.test.ts`)
# The database is the one npm test uses, unless ESSH_TEST_DATABASE_URL says otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
  echo "flaky-check: N must be a positive number of runs (got '$runs'); usage: bash scripts/flaky-check.sh [N] [vitest args…]" >&2
  exit 2
fi
bash scripts/setup.sh --for-tests >/dev/null && npx tsc --noEmit || exit 1
logs=$(mktemp -d "${TMPDIR:-/tmp}/essh-flaky-check-XXXXXX")
failed_runs=0
for i in $(seq 1 "$runs"); do
  started=$(date +%s)
  ESSH_TEST_COST_LOG="$logs/cost-$i.jsonl" npx vitest run "$@" >"$logs/run-$i.log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - started ))
  if [ "$rc" -eq 0 ]; then
    echo "run $i/$runs: pass in ${wall} s"
  else
    failed_runs=$((failed_runs + 1))
    # vitest's summary lines of the failed files, without colours.
    files=$(sed 's/\x1b\[[0-9;]*m//g' "$logs/run-$i.log" | grep -E '^ (❯|×) test/' | awk '{print $2}' | sort -u | tr '\n' ' ')
    echo "run $i/$runs: FAIL (exit $rc) in ${wall} s: ${files:-see the log}"
  fi
done
echo "$((runs - failed_runs)) of $runs runs passed; logs and per-file figures in $logs"
[ "$failed_runs" -eq 0 ]
