#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (configuration: deny.toml): licenses, banned crates
# (a second TLS stack: openssl, openssl-sys, native-tls) and sources (crates.io only). These
# run offline. Installs cargo-deny first if it is missing (compiling it takes minutes, which
# is why this is not part of CI).
#
#   scripts/deny.sh              offline checks: licenses, bans, sources
#   scripts/deny.sh advisories   also the RustSec advisories (fetches the advisory database
#                                from GitHub, so it needs network access)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    echo "cargo-deny is not installed; installing it (takes a few minutes)" >&2
    cargo install --locked cargo-deny
fi

cargo deny --offline check --hide-inclusion-graph licenses bans sources
if [[ "${1:-}" == "advisories" ]]; then
    cargo deny check --hide-inclusion-graph advisories
fi
