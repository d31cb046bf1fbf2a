#!/usr/bin/env bash
# PTY bulk output and keystroke echo latency through Airlock and through OpenSSH, measured in
# the same run on 127.0.0.1, printed side by side. Not a test: figures, not assertions.
#   BENCH_BYTES   bytes of zeros base64-encoded through the PTY (default 200000000)
#   BENCH_KEYS    keystrokes timed for echo latency (default 400)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bytes="${BENCH_BYTES:-200000000}"
keys="${BENCH_KEYS:-400}"

if ! command -v sshd >/dev/null || ! command -v ssh >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq openssh-server openssh-client
fi
cargo build --locked --release --bins
bin="$root/target/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# OpenSSH on a loopback port, with its own host and user keys.
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
pids+=($!)

# Airlock: broker and one agent, both on loopback.
port=$(free_port)
"$bin/airlock-broker" serve --data-dir "$work/broker" --listen "127.0.0.1:$port" >"$work/broker.out" 2>"$work/broker.log" &
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
pids+=($!)
target=$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' "$work/agent/agent.json")
for _ in $(seq 100); do "$bin/airlock" describe-instance-information | grep -q '"Online"' && break; sleep 0.1; done

ssh_cmd=(ssh -tt -q -p "$ssh_port" -i "$work/ssh/user_key" -o StrictHostKeyChecking=no
         -o UserKnownHostsFile=/dev/null -o BatchMode=yes "$(id -un)@127.0.0.1" bash --norc -i)
ssh_line=$(SHELL=/bin/bash "$bin/pty-bench" openssh "$bytes" "$keys" -- "${ssh_cmd[@]}")
airlock_line=$("$bin/pty-bench" airlock "$bytes" "$keys" -- "$bin/airlock" start-session --target "$target")

field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
printf '\n%-28s %14s %14s %10s\n' "PTY benchmark (127.0.0.1)" "Airlock" "OpenSSH" "ratio"
for f in mib_per_s echo_p50_us echo_p99_us; do
    a=$(field "$airlock_line" $f); o=$(field "$ssh_line" $f)
    printf '%-28s %14s %14s %10s\n' "$f" "$a" "$o" "$(python3 -c "print(f'{$a/$o:.2f}')")"
done
printf '%-28s %14s %14s\n' "output bytes" "$(field "$airlock_line" output_bytes)" "$(field "$ssh_line" output_bytes)"
echo "(throughput: higher is better; latency: lower is better; ratio = Airlock / OpenSSH)"
