#!/usr/bin/env bash
# Mutation testing of the security code (issue 16): SigV4, authorization, the policy engine,
# identity and keys, the agent registry, and the frame and control decoders.
#
#   scripts/mutants.sh                                  # the whole set
#   scripts/mutants.sh broker/src/sigv4.rs ...          # only these files
#   MUTANTS_ARGS="-F constant_time_eq" scripts/mutants.sh broker/src/sigv4.rs
#   MUTANTS_IN_PLACE=1 scripts/mutants.sh ...           # mutate this tree, reuse ./target
#
# Not part of CI: every mutant is a rebuild of the crate's unit-test binary. Only the unit
# tests run (`cargo test --lib`): they are where these files are tested, and they take
# seconds where the end-to-end suites take minutes. One job at a time (2 shared cores); the
# build directory starts from a copy of ./target so dependencies are not rebuilt, but the
# workspace crates are (about 15 minutes on 2 busy cores). MUTANTS_IN_PLACE=1 skips that by
# mutating the files here, one at a time, and restoring them: do not edit or build this tree
# while it runs. A mutant then costs a rebuild of one test binary, 30 to 60 s. Figures are
# in the closing notes of issue 16; a missed mutant is a missing test unless it is named there
# as equivalent.
#
# Results (MUTANTS_OUT, default target/mutants): mutants.out/{caught,missed,timeout,unviable}.txt
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "installing cargo-mutants from crates.io" >&2
    cargo install --locked cargo-mutants
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    files=(
        broker/src/sigv4.rs
        broker/src/authz.rs
        'broker/src/policy/*.rs'
        broker/src/identity.rs
        broker/src/keys.rs
        broker/src/registry.rs
        proto/src/frame.rs
        proto/src/control.rs
    )
fi
args=()
for f in "${files[@]}"; do
    args+=(--file "$f")
done

out=${MUTANTS_OUT:-target/mutants}
mkdir -p "$out"
if [ -n "${MUTANTS_IN_PLACE:-}" ]; then
    mode=(--in-place)
else
    mode=(--jobs 1 --copy-target=true)
fi
status=0
# shellcheck disable=SC2086 # MUTANTS_ARGS is split on purpose
cargo mutants \
    "${mode[@]}" \
    --exclude '**/tests/**' --exclude '**/*tests.rs' \
    --output "$out" \
    ${MUTANTS_ARGS:-} \
    "${args[@]}" \
    -- --lib || status=$?

results="$out/mutants.out"
count() { if [ -s "$results/$1.txt" ]; then wc -l <"$results/$1.txt"; else echo 0; fi; }
echo
echo "== mutants over: ${files[*]}"
echo "caught $(count caught), missed $(count missed), timeout $(count timeout), unviable $(count unviable)"
if [ -s "$results/missed.txt" ]; then
    echo "-- missed (a bug no unit test notices):"
    cat "$results/missed.txt"
fi
if [ -s "$results/timeout.txt" ]; then
    echo "-- timed out:"
    cat "$results/timeout.txt"
fi
# cargo-mutants exits 2 when a mutant was missed, 3 on timeouts; pass that on.
exit "$status"
