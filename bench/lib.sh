# Shared set-up of the benchmarks: release binaries, OpenSSH on a loopback port, and an
# Airlock broker with one agent, all torn down on exit. Sourced by bench/*.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

need_apt() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"
    fi
}

# BENCH_NO_BUILD=1 runs the binaries already in target/release.
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --locked --release --bins
bin="$root/target/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# OpenSSH on a loopback port with its own host and user keys; sets $ssh_port, $ssh_opts and
# $sshd_pid.
start_sshd() {
    need_apt openssh-server openssh-client
    mkdir -p /run/sshd "$work/ssh"
    ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/user_key"
    cp "$work/ssh/user_key.pub" "$work/ssh/authorized_keys"
    chmod 600 "$work/ssh/authorized_keys"
    ssh_port=$(free_port)
    cat >"$work/ssh/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port $ssh_port
HostKey $work/ssh/host_key
AuthorizedKeysFile $work/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin yes
UsePAM no
StrictModes no
PidFile $work/ssh/sshd.pid
CFG
    "$(command -v sshd)" -D -e -f "$work/ssh/sshd_config" 2>"$work/sshd.log" &
    sshd_pid=$!
    pids+=($!)
    ssh_opts=(-q -p "$ssh_port" -i "$work/ssh/user_key" -o StrictHostKeyChecking=no
              -o UserKnownHostsFile=/dev/null -o BatchMode=yes)
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port") 2>/dev/null && break; sleep 0.05; done
}

# An Airlock broker and one agent on loopback; sets AIRLOCK_* and AWS_*, $target, $broker_pid
# and $agent_pid.
# Arguments go to `airlock-broker serve`; the array broker_env, if set, holds NAME=VALUE
# variables for the broker alone.
start_airlock() {
    local port act id code
    port=$(free_port)
    env ${broker_env[@]+"${broker_env[@]}"} AIRLOCK_LOG=info,airlock_broker=debug "$bin/airlock-broker" serve --data-dir "$work/broker" --listen "127.0.0.1:$port" "$@" >"$work/broker.out" 2>"$work/broker.log" &
    broker_pid=$!
    pids+=($!)
    for _ in $(seq 100); do grep -q "listening on" "$work/broker.out" 2>/dev/null && break; sleep 0.1; done
    set -a; eval "$(grep '^AWS_' "$work/broker.out")"; set +a
    export AIRLOCK_ENDPOINT="https://127.0.0.1:$port" AIRLOCK_CA_FILE="$work/broker/ca.pem"
    act=$("$bin/airlock" create-activation --iam-role bench)
    id=$(printf '%s' "$act" | sed -n 's/.*"ActivationId": *"\([^"]*\)".*/\1/p')
    code=$(printf '%s' "$act" | sed -n 's/.*"ActivationCode": *"\([^"]*\)".*/\1/p')
    "$bin/airlock-agent" register --data-dir "$work/agent" --endpoint "$AIRLOCK_ENDPOINT" --activation-code "$code" \
        --activation-id "$id" --ca-file "$AIRLOCK_CA_FILE" >/dev/null
    SHELL=/bin/bash "$bin/airlock-agent" run --data-dir "$work/agent" 2>"$work/agent.log" &
    agent_pid=$!
    pids+=($!)
    target=$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' "$work/agent/agent.json")
    for _ in $(seq 100); do "$bin/airlock" describe-instance-information | grep -q '"Online"' && break; sleep 0.1; done
}

# Prints the value of key=value field $2 in line $1.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

# kB of RSS and PSS of a pid and its descendants whose command starts with $2 ("" = all).
mem() {
    python3 - "$1" "$2" <<'PY'
import os, sys
root, prefix = int(sys.argv[1]), sys.argv[2]
kids = {}
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            stat = open(f'/proc/{p}/stat').read()
            ppid = int(stat[stat.rindex(')') + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, ValueError):
            pass
todo, rss, pss = [root], 0, 0
while todo:
    pid = todo.pop()
    todo += kids.get(pid, [])
    try:
        comm = open(f'/proc/{pid}/comm').read().strip()
        if pid != root and not comm.startswith(prefix):
            continue
        for line in open(f'/proc/{pid}/smaps_rollup'):
            if line.startswith('Rss:'):
                rss += int(line.split()[1])
            elif line.startswith('Pss:'):
                pss += int(line.split()[1])
    except OSError:
        pass
print(rss, pss)
PY
}
