#!/usr/bin/env bash
# New sessions per second through one broker and one agent on 127.0.0.1, recording on: K
# workers start non-interactive `true` sessions back to back for T seconds. Airlock is driven
# in-process through the airlock-cli library (signed StartSession + QUIC + command +
# recording, no process spawn), then as the `airlock` CLI process, beside `ssh host true`
# through a ControlMaster and cold, all with K workers, in the same run. Not a test.
#   BENCH_WORKERS   concurrent workers (default 8)
#   BENCH_SECONDS   seconds per measurement (default 10)
source "$(dirname "$0")/lib.sh"
workers="${BENCH_WORKERS:-8}"
seconds="${BENCH_SECONDS:-10}"
start_sshd
start_airlock

user_host="$(id -un)@127.0.0.1"
ctl="$work/ssh/ctl"
ssh "${ssh_opts[@]}" -o ControlMaster=yes -o ControlPath="$ctl" -o ControlPersist=yes -fN "$user_host"
stop_master() { ssh -o ControlPath="$ctl" -O exit "$user_host" 2>/dev/null || true; }
trap 'stop_master; cleanup' EXIT INT TERM
# sshd's default MaxStartups (10) would refuse cold connections beyond it: not the point here.
[ "$workers" -le 10 ] || echo "note: more than 10 cold ssh workers may hit sshd's MaxStartups" >&2

recordings() { find "$work/broker" -name '*.cast*' | wc -l; }
before=$(recordings)
inproc=$("$bin/session-load" "$workers" "$seconds" "$target")
sleep 2 # the shipper moves finished recordings out of the spool
made=$(( $(recordings) - before ))
cli=$("$bin/session-load" spawn "$workers" "$seconds" "$bin/airlock" start-session --target "$target" \
    --document-name AWS-StartNonInteractiveCommand --parameters command=true)
mux=$("$bin/session-load" spawn "$workers" "$seconds" ssh "${ssh_opts[@]}" -o ControlPath="$ctl" "$user_host" true)
cold=$("$bin/session-load" spawn "$workers" "$seconds" ssh "${ssh_opts[@]}" -o ControlPath=none "$user_host" true)

ms() { python3 -c "print(f'{$1/1000:.1f}')"; }
printf '\n%-46s %10s %8s %14s %14s\n' "Sessions/s, $workers workers, ${seconds}s, recorded" "sessions/s" "failed" "start p50/p99" "total p50/p99"
row() {
    printf '%-46s %10s %8s %14s %14s\n' "$1" "$(field "$2" per_s)" "$(field "$2" failed)" \
        "$(ms "$(field "$2" start_p50_us)")/$(ms "$(field "$2" start_p99_us)")" \
        "$(ms "$(field "$2" total_p50_us)")/$(ms "$(field "$2" total_p99_us)")"
}
row "Airlock, in-process load generator" "$inproc"
row "Airlock, airlock CLI process per session" "$cli"
row "ssh host true (ControlMaster)" "$mux"
row "ssh host true (cold)" "$cold"
echo "(ms; start = StartSession → Ready in-process, launch → exit for processes; total = to exit."
echo " Recordings written during the in-process run: $made of $(field "$inproc" sessions) sessions."
echo " The load generator, broker, agent and sshd share this machine's $(nproc) cores.)"
