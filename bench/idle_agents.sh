#!/usr/bin/env bash
# Idle agents held by one broker on 127.0.0.1: N real agent links (the simulator
# `idle-agents` runs N registered agents' link code in one process), the broker's RSS and CPU
# per idle agent, then a broker `kill -9` and restart on the same data directory and port, and
# how long until all N links are back (first, half, 99 %, all: the reconnect jitter). Beside
# it, the anchor measured in the same run: sshd holding K idle `ssh -N` connections (RSS and
# PSS per connection, listener and per-connection processes summed). Not a test: figures.
#   BENCH_AGENTS        agents (default 5000)
#   BENCH_IDLE_SECONDS  how long the idle CPU is sampled (default 30)
#   BENCH_SSH_CONNS     idle ssh connections for the anchor (default 100)
source "$(dirname "$0")/lib.sh"
n="${BENCH_AGENTS:-5000}"
idle="${BENCH_IDLE_SECONDS:-30}"
k="${BENCH_SSH_CONNS:-100}"
# One UDP socket per link in the simulator, plus the broker's descriptors.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((n + 1000)) ] || { echo "ulimit -n $(ulimit -n) is too low for $n agents" >&2; exit 1; }

head -c 32 /dev/urandom | base64 >"$work/metrics.token"
start_airlock --metrics-token-file "$work/metrics.token"
port="${AIRLOCK_ENDPOINT##*:}"

# Agent links the broker holds now (its own gauge), or 0 when it does not answer.
connected() {
    curl -s --max-time 5 --cacert "$AIRLOCK_CA_FILE" -H "Authorization: Bearer $(cat "$work/metrics.token")" \
        "$AIRLOCK_ENDPOINT/metrics" 2>/dev/null | sed -n 's/^airlock_agents_connected \([0-9]*\).*/\1/p' | grep . || echo 0
}
now_ms() { date +%s%3N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

base=$(connected) # start_airlock's own agent
sleep 2
b0=$(rss "$broker_pid")
mkfifo "$work/sim.in"
"$bin/idle-agents" "$n" "$work/agents" <"$work/sim.in" >"$work/sim.out" 2>"$work/sim.err" &
sim=$!
pids+=($sim)
exec 7>"$work/sim.in"
for _ in $(seq 3600); do grep -q '^started=' "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^started=' "$work/sim.out" || { echo "the simulator did not start:" >&2; cat "$work/sim.err" >&2; exit 1; }
registered_line=$(grep '^registered=' "$work/sim.out")
t0=$(now_ms)
want=$((base + n))
for _ in $(seq 6000); do [ "$(connected)" -ge "$want" ] && break; sleep 0.1; done
up=$(connected)
connect_ms=$(($(now_ms) - t0))
[ "$up" -ge "$want" ] || echo "warning: only $up of $want links up after $connect_ms ms" >&2
sleep 5
b1=$(rss "$broker_pid")
c0=$(ticks "$broker_pid")
sleep "$idle"
c1=$(ticks "$broker_pid")
hz=$(getconf CLK_TCK)
cpu=$(python3 -c "print(f'{100 * ($c1 - $c0) / $hz / $idle:.1f}')")
per_agent=$(python3 -c "print(round(($b1 - $b0) / $n, 1))")

# kill -9 and restart on the same data directory and port; the agents redial with backoff.
kill -9 "$broker_pid"
wait "$broker_pid" 2>/dev/null || true
down_ms=$(now_ms)
sleep 1
AIRLOCK_LOG=info "$bin/airlock-broker" serve --data-dir "$work/broker" --listen "127.0.0.1:$port" \
    --metrics-token-file "$work/metrics.token" >"$work/broker2.out" 2>"$work/broker2.log" &
broker_pid=$!
pids+=($broker_pid)
first="" half="" most=""
for _ in $(seq 12000); do
    c=$(connected)
    t=$(($(now_ms) - down_ms))
    [ -z "$first" ] && [ "$c" -gt 0 ] && first=$t
    [ -z "$half" ] && [ "$c" -ge $((want / 2)) ] && half=$t
    [ -z "$most" ] && [ "$c" -ge $((want * 99 / 100)) ] && most=$t
    [ "$c" -ge "$want" ] && break
    sleep 0.1
done
back=$(connected)
all_ms=$(($(now_ms) - down_ms))
b2=$(rss "$broker_pid")

# The anchor: sshd holding k idle connections.
start_sshd
sleep 0.5
read -r s0 sp0 < <(mem "$sshd_pid" sshd)
for _ in $(seq "$k"); do
    ssh "${ssh_opts[@]}" -N root@127.0.0.1 </dev/null &
    pids+=($!)
done
for _ in $(seq 600); do
    [ "$(pgrep -c -P "$sshd_pid" sshd 2>/dev/null || echo 0)" -ge "$k" ] && break
    sleep 0.1
done
sleep 2
read -r s1 sp1 < <(mem "$sshd_pid" sshd)

echo "idle agents held by one broker (load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "  simulator: $registered_line"
echo "  airlock: $n agents up in $connect_ms ms; broker RSS $b0 → $b1 kB = $per_agent kB per agent; idle CPU ${cpu} % of one core over ${idle} s"
echo "  broker kill -9 + restart: first link back after ${first:-never} ms, half ${half:-never} ms, 99 % ${most:-never} ms, $back of $want after $all_ms ms; broker RSS then $b2 kB"
echo "  sshd anchor: $k idle ssh -N connections: RSS $(python3 -c "print(round(($s1 - $s0) / $k))") kB, PSS $(python3 -c "print(round(($sp1 - $sp0) / $k))") kB per connection"
exec 7>&-
