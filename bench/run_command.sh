#!/usr/bin/env bash
# Run Command across a fleet on 127.0.0.1: wall time of `uptime` on N targets at full
# concurrency, end to end as a process, round-robin in the same run:
#   - Airlock: `airlock send-command --document-name AWS-RunShellScript --targets
#     Key=tag:Bench,Values=yes --parameters commands=uptime --max-concurrency 100% --wait`
#     against N real `airlock-agent run` processes (each its own data dir), tagged Bench=yes
#     through the activation they register with (CreateActivation's Tags, sent by the AWS CLI;
#     the first agent, from start_airlock, is tagged with AddTagsToResource). Without the AWS
#     CLI the command names the N instances with --instance-ids instead.
#   - Airlock again without --wait's one-second poll: the same send-command, then
#     `airlock list-commands --command-id` back to back until the command is final.
#   - parallel-ssh (Debian's `pssh`) running `uptime` on N host entries with -p N, against N
#     distinct sshd processes, one per loopback port (N listeners, not one sshd with N `Port`
#     lines: one sshd would throttle the N simultaneous unauthenticated connections with its
#     MaxStartups 10 default, which is not what N machines do).
#   - a plain `for` loop of `ssh host uptime` over the same N sshds, one after the other.
# Each command runs R times after 2 unmeasured warm-ups, stdout and stderr to /dev/null
# (bench/src/session_bench.rs). The load average is read before and after. Not a test:
# figures, not assertions.
#   BENCH_AGENTS   targets N (default 20; at most 50, SendCommand's --instance-ids limit)
#   BENCH_RUNS     measured rounds per command (default 10)
source "$(dirname "$0")/lib.sh"
n="${BENCH_AGENTS:-20}"
runs="${BENCH_RUNS:-10}"
need_apt pssh
start_sshd
start_airlock
user="$(id -un)"

# N-1 more sshd processes with the same keys, each on its own port.
ports=("$ssh_port")
for i in $(seq 2 "$n"); do
    p=$(free_port)
    sed -e "s/^Port .*/Port $p/" -e "s|^PidFile .*|PidFile $work/ssh/sshd.$i.pid|" \
        "$work/ssh/sshd_config" >"$work/ssh/sshd_config.$i"
    "$(command -v sshd)" -D -e -f "$work/ssh/sshd_config.$i" 2>"$work/sshd.$i.log" &
    pids+=($!)
    ports+=("$p")
done
for p in "${ports[@]}"; do
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
done

# N-1 more agents. Tags through the activation when the AWS CLI is here (one call).
export AWS_CA_BUNDLE="$AIRLOCK_CA_FILE"
aws_ssm() { aws --endpoint-url "$AIRLOCK_ENDPOINT" --region "${AWS_REGION:-us-east-1}" ssm "$@"; }
by_tag=""
if command -v aws >/dev/null 2>&1 &&
    aws_ssm add-tags-to-resource --resource-type ManagedInstance --resource-id "$target" \
        --tags Key=Bench,Value=yes >/dev/null; then
    act=$(aws_ssm create-activation --iam-role bench --registration-limit "$n" --tags Key=Bench,Value=yes)
    by_tag=1
else
    echo "note: no AWS CLI; targeting by --instance-ids" >&2
    act=$("$bin/airlock" create-activation --iam-role bench --registration-limit "$n")
fi
act_id=$(printf '%s' "$act" | sed -n 's/.*"ActivationId": *"\([^"]*\)".*/\1/p')
act_code=$(printf '%s' "$act" | sed -n 's/.*"ActivationCode": *"\([^"]*\)".*/\1/p')
ids=("$target")
for i in $(seq 2 "$n"); do
    d="$work/agent.$i"
    "$bin/airlock-agent" register --data-dir "$d" --endpoint "$AIRLOCK_ENDPOINT" --activation-code "$act_code" \
        --activation-id "$act_id" --ca-file "$AIRLOCK_CA_FILE" >/dev/null
    SHELL=/bin/bash "$bin/airlock-agent" run --data-dir "$d" 2>"$work/agent.$i.log" &
    pids+=($!)
    ids+=("$(sed -n 's/.*"instance_id": *"\([^"]*\)".*/\1/p' "$d/agent.json")")
done
for _ in $(seq 300); do
    [ "$("$bin/airlock" describe-instance-information | grep -c '"Online"')" -ge "$n" ] && break
    sleep 0.2
done
online=$("$bin/airlock" describe-instance-information | grep -c '"Online"')
[ "$online" -ge "$n" ] || { echo "only $online of $n agents online" >&2; exit 1; }

if [ -n "$by_tag" ]; then
    targeting=(--targets Key=tag:Bench,Values=yes)
else
    targeting=(--instance-ids "${ids[@]}")
fi
hosts=()
for p in "${ports[@]}"; do hosts+=(-H "$user@127.0.0.1:$p"); done
ssh_common=(-q -i "$work/ssh/user_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes)
# Airlock without --wait's one-second poll: send, then `list-commands` back to back until the
# command is final (each poll is a CLI process, ~tens of ms), to see the broker's own time.
cat >"$work/airlock_poll.sh" <<SH
id=\$("$bin/airlock" send-command --document-name AWS-RunShellScript ${targeting[*]} --parameters commands=uptime \\
    --max-concurrency 100% | sed -n 's/.*"CommandId": *"\\([^"]*\\)".*/\\1/p' | head -1)
[ -n "\$id" ] || exit 1
for _ in \$(seq 3000); do
    case \$("$bin/airlock" list-commands --command-id "\$id" | grep -o '"Status": *"[A-Za-z]*"' | head -1) in
        *'"Success"') exit 0 ;;
        *'"Failed"' | *'"TimedOut"' | *'"Cancelled"') exit 1 ;;
    esac
done
exit 1
SH
cat >"$work/ssh_loop.sh" <<SH
for p in ${ports[*]}; do ssh ${ssh_common[*]} -p "\$p" $user@127.0.0.1 uptime || exit 1; done
SH

# One check that every system reaches all N targets before timing.
"$bin/airlock" send-command --document-name AWS-RunShellScript "${targeting[@]}" --parameters commands=uptime \
    --max-concurrency 100% --wait >"$work/check.out"
grep -q "^Success: $n targets" "$work/check.out" || { echo "Airlock did not run on $n targets:" >&2; cat "$work/check.out" >&2; exit 1; }
parallel-ssh -p "$n" -t 0 -x "${ssh_common[*]}" "${hosts[@]}" uptime >"$work/pssh.check" ||
    { echo "parallel-ssh failed:" >&2; cat "$work/pssh.check" >&2; exit 1; }
[ "$(grep -c '\[SUCCESS\]' "$work/pssh.check")" -eq "$n" ] || { echo "parallel-ssh did not reach $n hosts" >&2; exit 1; }

load0=$(cut -d' ' -f1-3 /proc/loadavg)
lines=$("$bin/session-bench" "$runs" \
    :: airlock "$bin/airlock" send-command --document-name AWS-RunShellScript "${targeting[@]}" \
        --parameters commands=uptime --max-concurrency 100% --wait \
    :: airlock_poll bash "$work/airlock_poll.sh" \
    :: pssh parallel-ssh -p "$n" -t 0 -x "${ssh_common[*]}" "${hosts[@]}" uptime \
    :: ssh_loop bash "$work/ssh_loop.sh")
load1=$(cut -d' ' -f1-3 /proc/loadavg)

ms() { python3 -c "print(f'{$1/1000:.1f}')"; }
printf '\n%-58s %9s %9s %9s %9s  %s\n' "uptime on $n targets, launch → all done → exit" "p50 ms" "p99 ms" "min ms" "max ms" "load avg (1 5 15 min)"
for job in airlock airlock_poll pssh ssh_loop; do
    l=$(printf '%s\n' "$lines" | grep "^$job ")
    case $job in
        airlock) name="airlock send-command --wait (${targeting[0]#--}, 100%)" ;;
        airlock_poll) name="airlock send-command, list-commands polled back to back" ;;
        pssh) name="parallel-ssh -p $n ($n sshd)" ;;
        ssh_loop) name="for loop of ssh host uptime ($n sshd)" ;;
    esac
    printf '%-58s %9s %9s %9s %9s  %s\n' "$name" "$(ms "$(field "$l" p50_us)")" "$(ms "$(field "$l" p99_us)")" \
        "$(ms "$(field "$l" min_us)")" "$(ms "$(field "$l" max_us)")" "$load0 → $load1"
done
a=$(field "$(printf '%s\n' "$lines" | grep '^airlock ')" p50_us)
p=$(field "$(printf '%s\n' "$lines" | grep '^pssh ')" p50_us)
s=$(field "$(printf '%s\n' "$lines" | grep '^ssh_loop ')" p50_us)
echo "($runs rounds each after 2 warm-ups, round-robin; p50 ratio Airlock/parallel-ssh = $(ratio "$a" "$p"),"
echo " Airlock/ssh loop = $(ratio "$a" "$s"); send-command --wait polls after 50 ms, doubling up to 1 s)"
