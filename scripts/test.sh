#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what they need first.
# Idempotent: safe to run again on the same machine. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"
    fi
}

# Tests run real shells, and OpenSSH (sshd, ssh, scp, ssh-keygen) for the ProxyCommand tests.
apt_install bash coreutils procps openssh-server openssh-client
# The browser console: node/npm build web/ (the broker embeds web/dist), and the console's
# browser tests drive Debian's chromium through Playwright (no browser download).
# A node that brings its own npm (NodeSource's) conflicts with Debian's npm package: install
# node and npm only when the commands are missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
apt_install chromium
# The run-as tests (agent/tests/session.rs) start sessions as this user; only root creates it.
if [ "$(id -u)" -eq 0 ]; then
    id -u airlock-runas >/dev/null 2>&1 || useradd --create-home --shell /bin/bash airlock-runas
fi

echo "== web/: the browser console bundle (embedded by the broker at compile time)"
bash web/build.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== Python venv: the stock AWS clients, and moto (S3 and CloudWatch Logs for the recording tests)"
bash scripts/venv.sh
echo "== build binaries (end-to-end tests run them)"
cargo build --locked --workspace --bins
echo "== cargo test: every test binary, three side by side (scripts/cargo-tests.py)"
python3 scripts/cargo-tests.py
cargo test --locked --workspace --doc 2>&1 | tee -a target/test-output.txt
echo "== the SSM API with the stock clients (boto3, AWS CLI) in .venv"
bash scripts/python-tests.sh 2>&1 | tee target/python-output.txt
# One closing line with the totals over every test binary and the Python suite.
{
    awk '/^test result:/ { p += $4; f += $6; s += $8 } END { print p, f, s }' target/test-output.txt
    python3 - target/python-output.txt <<'PY'
import re, sys
text = open(sys.argv[1]).read()
counts = {k: 0 for k in ("passed", "failed", "skipped")}
summary = [l for l in text.splitlines() if re.search(r"\d+ (passed|failed)", l) and " in " in l]
for n, kind in re.findall(r"(\d+) (passed|failed|skipped)", summary[-1] if summary else ""):
    counts[kind] += int(n)
print(counts["passed"], counts["failed"], counts["skipped"])
PY
} | awk '{ p += $1; f += $2; s += $3 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
