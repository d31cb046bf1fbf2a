#!/usr/bin/env bash
# One-machine demo: builds Airlock, starts a broker on embedded defaults and a local agent
# registered to it, then opens a shell through them. State lives in ./.demo (delete it to
# start over); everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo="$root/.demo"
port="${AIRLOCK_DEMO_PORT:-8443}"

# The browser console's bundle first: the broker embeds web/dist when it is compiled.
if command -v npm >/dev/null 2>&1 || [ "$(id -u)" -eq 0 ]; then
    bash web/build.sh
else
    echo "demo: npm is missing (apt-get install nodejs npm): the broker will serve no console" >&2
fi
cargo build --locked --bins
bin="$root/target/debug"
mkdir -p "$demo"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# 1. The broker. On first start it prints the admin's access key once: keep it in the demo folder.
"$bin/airlock-broker" serve --data-dir "$demo/broker" --listen "127.0.0.1:$port" \
    >"$demo/broker.out" 2>"$demo/broker.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$demo/broker.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$demo/broker.out" || { cat "$demo/broker.log"; exit 1; }
if grep -q '^AWS_ACCESS_KEY_ID=' "$demo/broker.out"; then
    grep '^AWS_' "$demo/broker.out" >"$demo/admin.env"
    chmod 600 "$demo/admin.env"
fi
set -a; . "$demo/admin.env"; set +a
export AIRLOCK_ENDPOINT="https://127.0.0.1:$port" AIRLOCK_CA_FILE="$demo/broker/ca.pem"

# The console password of admin, made once and kept in the demo folder.
if [ ! -f "$demo/console-password" ]; then
    pw="demo-$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
    "$bin/airlock" iam create-login-profile --user-name admin --password "$pw" >/dev/null
    (umask 077; printf '%s\n' "$pw" >"$demo/console-password")
fi

# 2. A local agent, registered once with an activation.
if [ ! -f "$demo/agent/agent.json" ]; then
    act=$("$bin/airlock" create-activation --iam-role demo --default-instance-name "$(hostname)")
    id=$(printf '%s' "$act" | sed -n 's/.*"ActivationId": *"\([^"]*\)".*/\1/p')
    code=$(printf '%s' "$act" | sed -n 's/.*"ActivationCode": *"\([^"]*\)".*/\1/p')
    "$bin/airlock-agent" register --data-dir "$demo/agent" --endpoint "$AIRLOCK_ENDPOINT" \
        --activation-code "$code" --activation-id "$id" --ca-file "$AIRLOCK_CA_FILE"
fi
"$bin/airlock-agent" run --data-dir "$demo/agent" 2>"$demo/agent.log" &
pids+=($!)
target=$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' "$demo/agent/agent.json")
for _ in $(seq 100); do
    "$bin/airlock" describe-instance-information 2>/dev/null | grep -q '"Online"' && break
    sleep 0.1
done

cat <<MSG

Airlock is running: broker at $AIRLOCK_ENDPOINT, agent $target online.
Browser console: $AIRLOCK_ENDPOINT/console/ (user admin, password in $demo/console-password;
the broker's certificate is signed by $AIRLOCK_CA_FILE, which the browser must trust or skip).
In another terminal, the same session is:

  export AIRLOCK_ENDPOINT=$AIRLOCK_ENDPOINT AIRLOCK_CA_FILE=$AIRLOCK_CA_FILE
  set -a; . $demo/admin.env; set +a
  $bin/airlock start-session --target $target
  $bin/airlock start-session --target $target --document-name AWS-StartNonInteractiveCommand --parameters command="uname -a"
  $bin/airlock describe-sessions --state History

Recordings land in $demo/broker/recordings. Opening a shell now; type 'exit' to end the demo.

MSG
if [ -t 0 ]; then
    "$bin/airlock" start-session --target "$target" || true
else
    "$bin/airlock" start-session --target "$target" --document-name AWS-StartNonInteractiveCommand \
        --parameters 'command=echo "hello from $(hostname) via Airlock"; uname -a'
fi
