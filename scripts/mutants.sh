#!/usr/bin/env bash
# Mutation testing of the security code (issue 16): SigV4, authorization, the policy engine,
# identity and keys, the session-token and agent registry, the frame and control decoders and
# stream limits, and the resume protocol (the relay's splice, the agent's live session).
#
#   scripts/mutants.sh                                  # the whole set
#   scripts/mutants.sh broker/src/sigv4.rs ...          # only these files
#   MUTANTS_ARGS="-F constant_time_eq" scripts/mutants.sh broker/src/sigv4.rs
#   MUTANTS_IN_PLACE=1 scripts/mutants.sh ...           # mutate this tree, reuse ./target
#
# Not part of CI: every mutant is a rebuild of the crate's unit-test binary. Each file is run
# on its own (smallest first) with only the tests where its behaviour is tested: the crate's
# unit tests (`cargo test --lib`), plus the agent's `session` tests for its live sessions;
# they take seconds where the end-to-end suites take minutes. One job at a time (2 shared cores); the
# build directory starts from a copy of ./target so dependencies are not rebuilt, but the
# workspace crates are (about 15 minutes on 2 busy cores). MUTANTS_IN_PLACE=1 skips that by
# mutating the files here, one at a time, and restoring them: do not edit or build this tree
# while it runs. A mutant then costs a rebuild of one test binary, 30 to 60 s. Figures are
# in the closing notes of issue 16; a missed mutant is a missing test unless it is named there
# as equivalent.
#
# Run it niced on a shared machine: `nice -n 15 scripts/mutants.sh`.
#
# Results (MUTANTS_OUT, default target/mutants), per file:
#   <file with / as _>/mutants.out/{caught,missed,timeout,unviable}.txt
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "installing cargo-mutants from crates.io" >&2
    cargo install --locked cargo-mutants
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    # Smallest first (by mutant count), so the quick files report early.
    files=(
        proto/src/stream.rs
        broker/src/authz.rs
        proto/src/frame.rs
        broker/src/registry.rs
        broker/src/sigv4.rs
        relay/src/splice.rs
        agent/src/session/live.rs
        broker/src/keys.rs
        broker/src/identity.rs
        'broker/src/policy/*.rs'
        proto/src/control.rs
    )
fi

# The tests that exercise each file: the crate's unit tests, plus the agent's session driver
# tests for the live session (its resume behaviour is tested over a real process there).
# Given as cargo arguments, so that only those test binaries are built for each mutant, not
# every end-to-end suite of the crate.
tests_for() {
    case "$1" in
        agent/src/session/live.rs) echo "--cargo-arg=--lib --cargo-arg=--test=session" ;;
        # A full disk under the spool is a real failure only an integration test can cause.
        relay/src/splice.rs) echo "--cargo-arg=--lib --cargo-arg=--test=full_disk" ;;
        *) echo "--cargo-arg=--lib" ;;
    esac
}

# Equivalent mutants: they change nothing a caller can observe, so no test can catch them.
excludes=(
    # Instants are never equal to a freshly taken `now`: `>` and `>=` agree on expiries.
    'registry.rs:.*replace > with >= in Registry::(mint_token|mint_resume_token|take_expired)'
    # Generations only need to differ: numbering them 0, 1, 2... (`*`) instead of 1, 2, 3...
    # distinguishes them just as well.
    'registry.rs:.*replace \+ with \* in Registry::agent_connected'
    # Only the condition of a warning in the log (live.rs:329): the clamp after it is what
    # counts. By line: re-check the number when that file changes.
    'live.rs:329:.* in send_output'
    # BATCH_LIMIT is a bound on the batch, not a number the output depends on: a batch of
    # exactly the limit or more is recorded and forwarded the same either way.
    # (splice.rs:583; by line, as above.)
    'splice.rs:583:.*replace < with <= in downstream'
)
exclude_args=()
for re in "${excludes[@]}"; do
    exclude_args+=(--exclude-re "$re")
done

out=${MUTANTS_OUT:-target/mutants}
mkdir -p "$out"
if [ -n "${MUTANTS_IN_PLACE:-}" ]; then
    mode=(--in-place)
else
    mode=(--jobs 1 --copy-target=true)
fi
count() { if [ -s "$1/$2.txt" ]; then wc -l <"$1/$2.txt"; else echo 0; fi; }
status=0
summary=()
for f in "${files[@]}"; do
    dir="$out/$(echo "$f" | tr '/*' '_x')"
    started=$(date +%s)
    file_status=0
    # shellcheck disable=SC2086 # MUTANTS_ARGS and the test arguments are split on purpose
    cargo mutants \
        "${mode[@]}" \
        --exclude '**/tests/**' --exclude '**/*tests.rs' \
        "${exclude_args[@]}" \
        --output "$dir" \
        ${MUTANTS_ARGS:-} \
        $(tests_for "$f") \
        --file "$f" || file_status=$?
    # cargo-mutants exits 2 when a mutant was missed, 3 on timeouts: keep the worst.
    if [ "$file_status" -gt "$status" ]; then status=$file_status; fi
    results="$dir/mutants.out"
    minutes=$(( ($(date +%s) - started + 30) / 60 ))
    summary+=("$f: caught $(count "$results" caught), missed $(count "$results" missed), timeout $(count "$results" timeout), unviable $(count "$results" unviable), ${minutes} min")
    if [ -s "$results/missed.txt" ]; then
        echo "-- missed in $f (a bug no test notices):"
        cat "$results/missed.txt"
    fi
    if [ -s "$results/timeout.txt" ]; then
        echo "-- timed out in $f:"
        cat "$results/timeout.txt"
    fi
done

echo
echo "== mutants (results in $out/<file>/mutants.out/{caught,missed,timeout,unviable}.txt)"
printf '%s\n' "${summary[@]}"
exit "$status"
