#!/usr/bin/env bash
# Acceptance tests of the broker's API with the stock AWS clients (boto3 and the AWS CLI v1).
# Creates (or reuses) the venv at .venv, installs tests/python/requirements.txt into it when
# that file changed since the last install, then runs pytest and exits with its code.
# Needs the workspace binaries: cargo build --workspace --bins (scripts/test.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
reqs="$root/tests/python/requirements.txt"
bin_dir="${AIRLOCK_BIN_DIR:-$root/target/debug}"

for b in airlock-broker airlock-agent airlock; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "python-tests: $bin_dir/$b is missing; build the binaries first: cargo build --workspace --bins" >&2
        exit 2
    fi
done

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv"
    if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        echo "python-tests: 'python3 -m venv' failed (on Debian's python3: apt-get install python3-venv)" >&2
        exit 2
    fi
fi
stamp="$venv/.requirements.sha256"
want=$( (sha256sum "$reqs"; "$venv/bin/python" --version) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing $(basename "$reqs") into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
    "$venv/bin/python" -m pip check
    echo "$want" >"$stamp"
fi

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
