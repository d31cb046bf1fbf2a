#!/usr/bin/env bash
# TCP throughput on 127.0.0.1 in one run: direct, through Airlock's port forward (client →
# broker → agent, two encrypted QUIC hops), through `ssh -N -L` (one encrypted hop) and through
# a plain socat relay (no encryption). Not a test: figures, not assertions.
#   BENCH_TCP_BYTES   bytes per measurement (default 2000000000)
#   BENCH_RUNS        measurements per path, the best is kept (default 3)
source "$(dirname "$0")/lib.sh"
bytes="${BENCH_TCP_BYTES:-2000000000}"
runs="${BENCH_RUNS:-3}"
need_apt socat
start_sshd
start_airlock

sink=$(free_port)
"$bin/tcp-bench" serve "$sink" & pids+=($!)

fwd=$(free_port)
"$bin/airlock" start-session --target "$target" --document-name AWS-StartPortForwardingSession \
    --parameters "portNumber=$sink,localPortNumber=$fwd" >"$work/forward.out" 2>&1 & pids+=($!)
sshl=$(free_port)
ssh -N -L "127.0.0.1:$sshl:127.0.0.1:$sink" "${ssh_opts[@]}" "$(id -un)@127.0.0.1" & pids+=($!)
socatp=$(free_port)
socat "TCP-LISTEN:$socatp,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$sink" & pids+=($!)
for p in "$fwd" "$sshl" "$socatp"; do
    for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done

best() { # port → best gbit_per_s over $runs
    local top=0 line g
    for _ in $(seq "$runs"); do
        line=$("$bin/tcp-bench" send "$1" "$bytes")
        g=$(field "$line" gbit_per_s)
        top=$(python3 -c "print(max($top, $g))")
    done
    echo "$top"
}
direct=$(best "$sink"); airlock=$(best "$fwd"); ssh=$(best "$sshl"); socat=$(best "$socatp")
printf '\n%-34s %12s %18s\n' "TCP throughput (127.0.0.1)" "Gbit/s" "vs ssh -L"
printf '%-34s %12s %18s\n' "direct" "$direct" "$(ratio "$direct" "$ssh")"
printf '%-34s %12s %18s\n' "Airlock port forward (2 hops)" "$airlock" "$(ratio "$airlock" "$ssh")"
printf '%-34s %12s %18s\n' "ssh -N -L" "$ssh" "1.00"
printf '%-34s %12s %18s\n' "socat relay (no encryption)" "$socat" "$(ratio "$socat" "$ssh")"
echo "($bytes bytes per run, best of $runs; Airlock/direct = $(ratio "$airlock" "$direct"))"
