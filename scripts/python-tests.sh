#!/usr/bin/env bash
# Acceptance tests of the broker's API with the stock AWS clients (boto3 and the AWS CLI v1).
# Sets up the venv at .venv (scripts/venv.sh), then runs pytest and exits with its code.
# Needs the workspace binaries: cargo build --workspace --bins (scripts/test.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
bin_dir="${AIRLOCK_BIN_DIR:-$root/target/debug}"

for b in airlock-broker airlock-agent airlock; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "python-tests: $bin_dir/$b is missing; build the binaries first: cargo build --workspace --bins" >&2
        exit 2
    fi
done

bash scripts/venv.sh

# Extra arguments go to pytest; without a path among them, the whole suite runs.
paths=(tests/python)
for a in "$@"; do
    if [ -e "${a%%::*}" ]; then paths=(); fi
done
echo "== pytest ${paths[*]:-} $*"
export AIRLOCK_BIN_DIR="$bin_dir"
set +e
"$venv/bin/python" -m pytest -q --tb=short -p no:cacheprovider "${paths[@]}" "$@"
code=$?
set -e
exit $code
