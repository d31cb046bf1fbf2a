#!/usr/bin/env bash
# Session start on 127.0.0.1: launch → remote `true` → exit, timed for the airlock CLI
# (AWS-StartNonInteractiveCommand: StartSession over HTTPS, QUIC + TLS to the broker, the
# agent runs `true`, recorded) beside `ssh host true` cold (new TCP + key exchange + auth)
# and through an OpenSSH ControlMaster (ControlPersist: one multiplexed channel), all in the
# same run, round-robin. Not a test: figures, not assertions.
#   BENCH_RUNS   measured runs per command (default 50)
source "$(dirname "$0")/lib.sh"
runs="${BENCH_RUNS:-50}"
start_sshd
start_airlock

user_host="$(id -un)@127.0.0.1"
ctl="$work/ssh/ctl"
ssh "${ssh_opts[@]}" -o ControlMaster=yes -o ControlPath="$ctl" -o ControlPersist=yes -fN "$user_host"
# ControlPersist backgrounds the master; `ssh -O exit` ends it (cleanup kills by pid only).
stop_master() { ssh -o ControlPath="$ctl" -O exit "$user_host" 2>/dev/null || true; }
trap 'stop_master; cleanup' EXIT INT TERM

lines=$("$bin/session-bench" "$runs" \
    :: airlock "$bin/airlock" start-session --target "$target" \
        --document-name AWS-StartNonInteractiveCommand --parameters command=true \
    :: ssh_cold ssh "${ssh_opts[@]}" -o ControlPath=none "$user_host" true \
    :: ssh_mux ssh "${ssh_opts[@]}" -o ControlPath="$ctl" "$user_host" true)

ms() { python3 -c "print(f'{$1/1000:.1f}')"; }
printf '\n%-44s %10s %10s %10s %10s\n' "Session start, launch → true → exit" "p50 ms" "p99 ms" "min ms" "max ms"
for job in airlock ssh_cold ssh_mux; do
    l=$(printf '%s\n' "$lines" | grep "^$job ")
    case $job in
        airlock) name="airlock start-session (command=true)" ;;
        ssh_cold) name="ssh host true (cold)" ;;
        ssh_mux) name="ssh host true (ControlMaster)" ;;
    esac
    printf '%-44s %10s %10s %10s %10s\n' "$name" "$(ms "$(field "$l" p50_us)")" "$(ms "$(field "$l" p99_us)")" \
        "$(ms "$(field "$l" min_us)")" "$(ms "$(field "$l" max_us)")"
done
a=$(field "$(printf '%s\n' "$lines" | grep '^airlock ')" p50_us)
c=$(field "$(printf '%s\n' "$lines" | grep '^ssh_cold ')" p50_us)
m=$(field "$(printf '%s\n' "$lines" | grep '^ssh_mux ')" p50_us)
echo "($runs runs each, round-robin; p50 ratio Airlock/ssh cold = $(ratio "$a" "$c"), Airlock/ControlMaster = $(ratio "$a" "$m"))"
