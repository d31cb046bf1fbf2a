#!/usr/bin/env bash
# What shipping recordings costs a session: PTY bulk output and keystroke echo through Airlock
# recording to the local folder only, then also streaming to S3 and CloudWatch Logs (a moto
# server on loopback stands in for both), beside OpenSSH in the same run; and how long after
# the session ended every sink had confirmed the recording. Not a test: figures.
#   BENCH_BYTES   bytes of zeros base64-encoded through the PTY (default 100000000)
#   BENCH_KEYS    keystrokes timed for echo latency (default 200)
source "$(dirname "$0")/lib.sh"
bytes="${BENCH_BYTES:-100000000}"
keys="${BENCH_KEYS:-200}"
bash "$root/scripts/venv.sh" >/dev/null
moto_port=$(free_port)
"$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$moto_port/moto-api/', timeout=1)" 2>/dev/null && break
    sleep 0.1
done
start_sshd
# The broker reaches moto with its own credentials; the CLI keeps the broker's admin key.
broker_env=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1)
start_airlock --aws-endpoint-url "http://127.0.0.1:$moto_port"
moto() { AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 \
    "$root/.venv/bin/aws" --endpoint-url "http://127.0.0.1:$moto_port" "$@"; }
moto s3api create-bucket --bucket airlock-bench >/dev/null
broker_api() { AWS_DEFAULT_REGION=us-east-1 AWS_CA_BUNDLE="$AIRLOCK_CA_FILE" \
    "$root/.venv/bin/aws" --endpoint-url "$AIRLOCK_ENDPOINT" "$@"; }

# Seconds from now until the spool holds no recording and no delivery is pending.
drain_s() {
    local start=$(date +%s%N)
    for _ in $(seq 6000); do
        if "$bin/airlock" recordings status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if not s["PendingDeliveries"] and s["Spool"]["ActiveRecordings"] == 0 else 1)'; then
            break
        fi
        sleep 0.1
    done
    python3 -c "print(f'{($(date +%s%N) - $start) / 1e9:.1f}')"
}

run_airlock() { "$bin/pty-bench" airlock "$bytes" "$keys" -- "$bin/airlock" start-session --target "$target"; }
ssh_line=$(SHELL=/bin/bash "$bin/pty-bench" openssh "$bytes" "$keys" -- \
    ssh -tt "${ssh_opts[@]}" "$(id -un)@127.0.0.1" bash --norc -i)
run_airlock >/dev/null # warm-up: the first session pays for cold caches
drain_s >/dev/null
local_line=$(run_airlock)
local_drain=$(drain_s)
printf '{"schemaVersion":"1.0","sessionType":"Standard_Stream","inputs":{"s3BucketName":"airlock-bench","s3KeyPrefix":"bench","cloudWatchLogGroupName":"/airlock/bench","cloudWatchStreamingEnabled":true}}' >"$work/prefs.json"
broker_api ssm create-document --name SSM-SessionManagerRunShell --document-type Session \
    --content "file://$work/prefs.json" >/dev/null
cloud_line=$(run_airlock)
cloud_drain=$(drain_s)
recorded=$(ls -l "$work/broker/recordings/"*.cast | awk '{ s += $5 } END { print s }')
s3_bytes=$(moto s3api list-objects-v2 --bucket airlock-bench --prefix bench/ --query 'sum(Contents[?ends_with(Key, `.cast`)].Size)' --output text)

printf '\n%-34s %14s %14s %14s\n' "Recording cost (127.0.0.1)" "local only" "+S3 +CW (moto)" "OpenSSH"
for f in mib_per_s echo_p50_us echo_p99_us; do
    printf '%-34s %14s %14s %14s\n' "$f" "$(field "$local_line" $f)" "$(field "$cloud_line" $f)" "$(field "$ssh_line" $f)"
done
printf '%-34s %14s %14s %14s\n' "all sinks confirmed, s after end" "$local_drain" "$cloud_drain" "-"
echo "($(( recorded / 1000000 )) MB of recordings in all, $(( s3_bytes / 1000000 )) MB of them in S3; OpenSSH records nothing; moto is a Python"
echo " server, so the cloud drain time measures moto more than Airlock)"
