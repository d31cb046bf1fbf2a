#!/usr/bin/env bash
# Memory per live session on 127.0.0.1: N idle shell sessions (80x24 PTY) held open at once
# through Airlock (opened from one process by the airlock-cli library), then N `ssh -tt`
# sessions; the growth of the broker's RSS, the agent's RSS and PSS, and of all sshd
# processes' RSS and PSS (the listener and its per-connection children), divided by N. The
# shells themselves (bash on both sides) are left out. Not a test: figures, not assertions.
#   BENCH_SESSIONS   sessions held at once (default 100)
source "$(dirname "$0")/lib.sh"
n="${BENCH_SESSIONS:-100}"
start_sshd
start_airlock

# How many descendants of pid $1 run command $2.
mem_count() {
    python3 - "$1" "$2" <<'PY'
import os, sys
root, name = int(sys.argv[1]), sys.argv[2]
kids = {}
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            stat = open(f'/proc/{p}/stat').read()
            kids.setdefault(int(stat[stat.rindex(')') + 2:].split()[1]), []).append(int(p))
        except (OSError, ValueError):
            pass
todo, count = list(kids.get(root, [])), 0
while todo:
    pid = todo.pop()
    todo += kids.get(pid, [])
    try:
        count += open(f'/proc/{pid}/comm').read().strip() == name
    except OSError:
        pass
print(count)
PY
}
per() { python3 -c "print(round(($2 - $1) / ${3:-$n}))"; } # before after [count] → kB per session

sleep 1
read -r b0 _ < <(mem "$broker_pid" none)
read -r a0 ap0 < <(mem "$agent_pid" none)
mkfifo "$work/hold.in"
"$bin/session-load" hold "$n" "$target" <"$work/hold.in" >"$work/hold.out" &
holder=$!
pids+=($holder)
exec 7>"$work/hold.in"
for _ in $(seq 600); do grep -q '^ready=' "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
grep -q "^ready=$n" "$work/hold.out" || { echo "Airlock sessions did not all open" >&2; exit 1; }
sleep 2
read -r b1 _ < <(mem "$broker_pid" none)
read -r a1 ap1 < <(mem "$agent_pid" none)
exec 7>&-
wait "$holder" || true

read -r s0 sp0 < <(mem "$sshd_pid" sshd)
mkfifo "$work/ssh.in"
exec 8<>"$work/ssh.in"
user_host="$(id -un)@127.0.0.1"
for i in $(seq "$n"); do
    ssh -tt "${ssh_opts[@]}" "$user_host" bash --norc -i <"$work/ssh.in" >/dev/null 2>&1 &
    pids+=($!)
    # sshd drops unauthenticated connections beyond MaxStartups (10): let each batch log in.
    [ $((i % 5)) -eq 0 ] && sleep 1
done
sleep 3
shells=$(mem_count "$sshd_pid" bash)
read -r s1 sp1 < <(mem "$sshd_pid" sshd)

printf '\n%-40s %14s %14s\n' "Memory per live idle session ($n held)" "RSS kB" "PSS kB"
printf '%-40s %14s %14s\n' "Airlock broker" "$(per "$b0" "$b1")" "-"
printf '%-40s %14s %14s\n' "Airlock agent" "$(per "$a0" "$a1")" "$(per "$ap0" "$ap1")"
printf '%-40s %14s %14s\n' "OpenSSH sshd (all its processes)" "$(per "$s0" "$s1" "$shells")" "$(per "$sp0" "$sp1" "$shells")"
echo "(growth of the processes' memory while the sessions are open, divided by their number;"
echo " shells excluded; ssh sessions with a live shell: $shells of $n, the divisor for sshd)"
