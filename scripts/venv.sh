#!/usr/bin/env bash
# Creates (or reuses) the Python venv at .venv and installs tests/python/requirements.txt into
# it when that file changed since the last install: the stock AWS clients (boto3, AWS CLI) and
# moto's server (the S3 and CloudWatch Logs the recording tests ship to). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
reqs="$root/tests/python/requirements.txt"

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv"
    if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        echo "venv: 'python3 -m venv' failed (on Debian's python3: apt-get install python3-venv)" >&2
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
