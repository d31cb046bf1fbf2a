#!/usr/bin/env bash
# Builds the browser console into web/dist/ (content-hashed bundle + index.html), which the
# broker embeds at compile time: run this, then `cargo build`. Installs Debian's node/npm
# when missing (idempotent, as scripts/test.sh does) and `npm ci` when node_modules is missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "web/build.sh: node and npm are missing: apt-get install nodejs npm" >&2
        exit 2
    fi
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq nodejs npm
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    npm ci --no-audit --no-fund
fi
npx tsc --noEmit -p .
node build.mjs
