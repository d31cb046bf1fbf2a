#!/usr/bin/env python3
"""Builds every test binary of the workspace, then runs them side by side.

Most binaries are end-to-end tests that spend their time waiting on sockets and timers, so
running a few at once shortens the suite on two cores without loading them more. Each binary
runs as `cargo test` would run it: working directory its package's folder, `CARGO_PKG_NAME`
and `CARGO_MANIFEST_DIR` set. Output goes to target/test-logs/<binary>.txt and, joined in
order, to target/test-output.txt (the `test result:` lines the suite's summary counts).

Usage: scripts/cargo-tests.py [--jobs N] [cargo selection, e.g. -p airlock-relay --test x]
  --jobs: binaries run at once (default 3; AIRLOCK_TEST_JOBS overrides); without a
  selection, the whole workspace.
Exit status: 0 when every binary passed, 1 otherwise (the failures' logs are printed).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "target" / "test-logs"
DURATIONS = ROOT / "target" / "test-durations.json"


def build(selection):
    """Builds the test binaries; returns one dict per binary."""
    cmd = [
        "cargo", "test", "--locked", *(selection or ["--workspace"]), "--no-run",
        "--message-format=json-render-diagnostics",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    binaries = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        manifest = Path(msg["manifest_path"])
        target = msg["target"]
        package = msg["package_id"]
        # "path+file:///work/x/broker#airlock-broker@0.1.0" or "... (path+file://...)".
        name = package.split("#")[-1].split("@")[0] if "#" in package else package.split()[0]
        binaries.append({
            "key": f"{name}/{target['kind'][0]}/{target['name']}",
            "package": name,
            "dir": str(manifest.parent),
            "exe": msg["executable"],
        })
    return binaries


def run(binary):
    """Runs one test binary; returns (binary, exit code, seconds)."""
    env = dict(os.environ, CARGO_PKG_NAME=binary["package"], CARGO_MANIFEST_DIR=binary["dir"])
    log = LOGS / (binary["key"].replace("/", "__") + ".txt")
    started = time.monotonic()
    with open(log, "w") as out:
        out.write(f"     Running {binary['key']} ({binary['exe']})\n")
        out.flush()
        code = subprocess.run(
            [binary["exe"]], cwd=binary["dir"], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    return binary, code, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("AIRLOCK_TEST_JOBS", "3")))
    args, selection = parser.parse_known_args()
    binaries = build(selection)
    LOGS.mkdir(parents=True, exist_ok=True)
    # Longest first (from the last run here), so the slowest do not start last.
    try:
        known = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        known = {}
    binaries.sort(key=lambda b: -known.get(b["key"], 1000 if "/test/" in b["key"] else 0))
    results = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for done in as_completed([pool.submit(run, b) for b in binaries]):
            binary, code, seconds = done.result()
            state = "ok" if code == 0 else f"FAILED (exit {code})"
            print(f"  {binary['key']}: {state} in {seconds:.1f} s", flush=True)
            results.append((binary, code, seconds))
    results.sort(key=lambda r: r[0]["key"])
    known.update({b["key"]: round(s, 1) for b, _, s in results})
    DURATIONS.write_text(json.dumps(known, indent=1, sort_keys=True))
    failed = [b for b, code, _ in results if code != 0]
    with open(ROOT / "target" / "test-output.txt", "w") as joined:
        for binary, _, _ in results:
            joined.write((LOGS / (binary["key"].replace("/", "__") + ".txt")).read_text())
    for binary in failed:
        print(f"\n===== {binary['key']} failed; its output:", flush=True)
        print((LOGS / (binary["key"].replace("/", "__") + ".txt")).read_text()[-20000:])
    print(f"{len(results) - len(failed)} of {len(results)} test binaries passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
