#!/usr/bin/env bash
# PTY bulk output and keystroke echo latency through Airlock and through OpenSSH, measured in
# the same run on 127.0.0.1, printed side by side. Not a test: figures, not assertions.
#   BENCH_BYTES   bytes of zeros base64-encoded through the PTY (default 200000000)
#   BENCH_KEYS    keystrokes timed for echo latency (default 400)
source "$(dirname "$0")/lib.sh"
bytes="${BENCH_BYTES:-200000000}"
keys="${BENCH_KEYS:-400}"
start_sshd
start_airlock

ssh_line=$(SHELL=/bin/bash "$bin/pty-bench" openssh "$bytes" "$keys" -- \
    ssh -tt "${ssh_opts[@]}" "$(id -un)@127.0.0.1" bash --norc -i)
airlock_line=$("$bin/pty-bench" airlock "$bytes" "$keys" -- "$bin/airlock" start-session --target "$target")

printf '\n%-28s %14s %14s %10s\n' "PTY benchmark (127.0.0.1)" "Airlock" "OpenSSH" "ratio"
for f in mib_per_s echo_p50_us echo_p99_us; do
    a=$(field "$airlock_line" $f); o=$(field "$ssh_line" $f)
    printf '%-28s %14s %14s %10s\n' "$f" "$a" "$o" "$(ratio "$a" "$o")"
done
printf '%-28s %14s %14s\n' "output bytes" "$(field "$airlock_line" output_bytes)" "$(field "$ssh_line" output_bytes)"
echo "(throughput: higher is better; latency: lower is better; ratio = Airlock / OpenSSH)"
