"""The browser console in a real browser: Debian's headless chromium (/usr/bin/chromium)
driven by Playwright against the real broker and agent. Screenshots go to target/screenshots/,
or to docs/screenshots/ with AIRLOCK_UPDATE_SCREENSHOTS=1 (so a test run leaves the checkout as
it was).

Needs the broker built with the console bundle: bash web/build.sh, then cargo build.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import ROOT, make_user, policy, wait_for

CHROMIUM = Path(os.environ.get("AIRLOCK_CHROMIUM", "/usr/bin/chromium"))
SHOTS = ROOT / ("docs" if os.environ.get("AIRLOCK_UPDATE_SCREENSHOTS") == "1" else "target") / "screenshots"
PASSWORD = "console-pass-Horse-9"

CONSOLE_POLICY = policy(
    {"Sid": "All", "Effect": "Allow", "Action": "ssm:*", "Resource": "*"},
)


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            # Root in a container has no user namespaces for chromium's sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def operator(broker):
    """A user with a console password, allowed every ssm action."""
    ident = make_user(broker, "console-op", {"ssm-all": CONSOLE_POLICY})
    broker.iam("CreateLoginProfile", {"UserName": ident.user_name, "Password": PASSWORD})
    return ident


@pytest.fixture(scope="module")
def built(broker):
    resp = broker.http.request("GET", broker.url + "/console/", timeout=10.0, retries=False)
    body = resp.data.decode(errors="replace")
    if "not built into this broker" in body:
        pytest.fail("the broker was built without the console bundle: bash web/build.sh, then cargo build")
    return body


@pytest.fixture
def page(chromium, broker, built):
    # The broker's certificate is signed by its own CA, which this chromium does not trust.
    ctx = chromium.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 720})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def sign_in(page, broker, user: str, password: str) -> None:
    page.goto(broker.url + "/")
    assert urlparse(page.url).path == "/console/", page.url
    page.get_by_label("IAM user name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def terminal_text(page, index: int = 0) -> str:
    return page.evaluate("i => window.airlockConsole.terminalText(i)", index)


def wait_text(page, what: str, pattern: str, limit: float = 20) -> re.Match:
    return wait_for(what, limit, lambda: re.search(pattern, terminal_text(page), re.M))


# --- headers and routing --------------------------------------------------------------------------


def test_console_headers_and_root_redirect(broker, built):
    resp = broker.http.request("GET", broker.url + "/console/", timeout=10.0, retries=False)
    assert resp.status == 200
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    assert "unsafe" not in [d for d in csp.split(";") if d.strip().startswith("script-src")][0], csp
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    assert resp.headers.get("Cache-Control") == "no-cache"
    script = re.search(r'src="/console/(main-[A-Z0-9]{8}\.js)"', built)
    assert script, built
    asset = broker.http.request("GET", broker.url + "/console/" + script.group(1), timeout=10.0, retries=False)
    assert asset.status == 200
    assert "immutable" in asset.headers.get("Cache-Control", ""), asset.headers
    assert asset.headers.get("Content-Type", "").startswith("text/javascript")
    # A browser asking for / is sent to the console; an API client still gets the API's answer.
    r = broker.http.request("GET", broker.url + "/", headers={"Accept": "text/html"}, redirect=False, timeout=10.0)
    assert r.status == 302 and r.headers.get("Location") == "/console/", (r.status, r.headers)
    r = broker.http.request("GET", broker.url + "/", redirect=False, timeout=10.0)
    assert r.status == 405, r.status


# --- sign in and instances --------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_password_then_lists_instances(page, broker, operator, agent):
    sign_in(page, broker, operator.user_name, "not-the-password")
    alert = page.get_by_role("alert").filter(has_text="incorrect")
    alert.wait_for(timeout=15000)
    shot(page, "console-signin-refused")
    assert page.get_by_role("heading", name="Managed instances").count() == 0

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Managed instances").wait_for(timeout=15000)
    row = page.get_by_role("row").filter(has_text=agent.instance_id)
    row.wait_for(timeout=15000)
    assert "Online" in row.inner_text()
    assert row.get_by_role("button", name="Start session").is_visible()
    shot(page, "console-instances")
    page.get_by_role("button", name="Dark theme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    shot(page, "console-instances-dark")

    # The filter narrows the table to matching rows.
    page.get_by_label("Filter instances").fill("no-such-host-xyz")
    page.get_by_text("No instance matches the filter.").wait_for(timeout=5000)
    page.get_by_label("Filter instances").fill(agent.instance_id)
    row.wait_for(timeout=5000)

    # Signing out ends the session: a reload shows the sign-in form.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("IAM user name").wait_for(timeout=10000)
    page.reload()
    page.get_by_label("IAM user name").wait_for(timeout=10000)


# --- terminal -----------------------------------------------------------------------------------


def start_shell(page, broker, operator, agent) -> None:
    sign_in(page, broker, operator.user_name, PASSWORD)
    page.get_by_role("button", name="Dark theme").click()
    row = page.get_by_role("row").filter(has_text=agent.instance_id)
    row.get_by_role("button", name="Start session").click()
    status = page.locator(".term-status")
    wait_for("the terminal to start", 20, lambda: status.inner_text() != "Starting…")
    assert status.inner_text() == "Connected", (status.inner_text(), terminal_text(page).strip())
    page.locator(".xterm").click()


def test_terminal_runs_a_shell_and_follows_resizes(page, broker, operator, agent):
    start_shell(page, broker, operator, agent)
    page.keyboard.type("echo hello-$RANDOM\n")
    m = wait_text(page, "the echo's output", r"^hello-(\d+)\s*$")
    assert m.group(1).isdigit()
    shot(page, "console-terminal")

    cols, rows = page.evaluate("() => window.airlockConsole.terminalSize(0)")
    page.keyboard.type("stty size\n")
    wait_text(page, "stty size", rf"^{rows} {cols}\s*$")

    page.set_viewport_size({"width": 800, "height": 480})
    wait_for("the terminal to refit", 10, lambda: page.evaluate("() => window.airlockConsole.terminalSize(0)") != [cols, rows])
    cols2, rows2 = page.evaluate("() => window.airlockConsole.terminalSize(0)")
    assert cols2 < cols and rows2 < rows, (cols, rows, cols2, rows2)
    page.keyboard.type("clear; stty size\n")
    wait_text(page, "the new stty size", rf"^{rows2} {cols2}\s*$")

    page.get_by_role("button", name="Terminate").click()
    page.get_by_role("status").filter(has_text="Terminated").wait_for(timeout=10000)


def test_a_dropped_socket_resumes_without_losing_or_repeating_output(page, broker, operator, agent):
    start_shell(page, broker, operator, agent)
    page.keyboard.type("for i in $(seq 1 400); do echo line-$i; sleep 0.005; done; echo loop-done\n")
    wait_text(page, "the loop to start", r"^line-20$")
    assert page.evaluate("() => window.airlockConsole.dropSocket(0)")
    status = page.locator(".term-status")
    try:
        wait_for("the resume", 30, lambda: status.inner_text() == "Resumed")
    except AssertionError:
        print((broker.root / "agent-main.log").read_text()[-3000:])
        raise
    wait_text(page, "the loop's end", r"^loop-done$", limit=60)
    got = [int(n) for n in re.findall(r"^line-(\d+)$", terminal_text(page), re.M)]
    assert got == list(range(1, 401)), f"lost or repeated lines: {sorted(set(range(1, 401)) ^ set(got))[:20]} ({len(got)} lines)"
    page.keyboard.type("echo after-$((6*7))\n")
    wait_text(page, "input after the resume", r"^after-42$")


def test_an_output_flood_arrives_whole_and_the_page_keeps_answering(page, broker, operator, agent):
    start_shell(page, broker, operator, agent)
    n = 1_000_000  # `seq` prints 6.9 MB
    started = time.monotonic()
    page.keyboard.type(f"seq 1 {n}; echo flood-$?-done\n")
    # While it pours in, the page still runs script promptly.
    for _ in range(3):
        t = time.monotonic()
        assert page.evaluate("() => 6 * 7") == 42
        assert time.monotonic() - t < 5, "the page stopped answering during the flood"
        time.sleep(0.5)
    wait_text(page, "the flood's end", r"^flood-0-done$", limit=240)
    elapsed = time.monotonic() - started
    text = terminal_text(page)
    # The last lines arrive in order just before the marker (the scrollback keeps 5000 lines).
    tail = re.findall(r"^(\d+)$", text, re.M)[-3:]
    assert tail == [str(n - 2), str(n - 1), str(n)], tail
    print(f"flood: {n} lines (6.9 MB) rendered in {elapsed:.1f} s")


# --- the WebSocket upgrade's checks -------------------------------------------------------------


def upgrade(broker, origin: str | None, cookie: str | None, first: bytes | None = None) -> int | bytes:
    """The HTTP status of a raw WebSocket handshake at /console/api/terminal; with `first`,
    sends it as the first binary message after a 101 and returns the broker's answer."""
    u = urlparse(broker.url)
    ctx = ssl.create_default_context(cafile=str(broker.ca_file))
    with socket.create_connection((u.hostname, u.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=u.hostname) as s:
            lines = [
                "GET /console/api/terminal HTTP/1.1",
                f"Host: {u.hostname}:{u.port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Protocol: airlock.terminal.v1",
            ]
            if origin:
                lines.append(f"Origin: {origin}")
            if cookie:
                lines.append(f"Cookie: airlock_console={cookie}")
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(1024)
                if not chunk:
                    break
                head += chunk
            status = int(head.split(b" ", 2)[1])
            if first is None or status != 101:
                return status
            while b"\r\n\r\n" not in head:
                head += s.recv(1024)
            rest = head.split(b"\r\n\r\n", 1)[1]
            mask = os.urandom(4)
            assert len(first) < 126
            s.sendall(bytes([0x82, 0x80 | len(first)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(first)))
            while len(rest) < 2 or len(rest) < 2 + rest[1]:
                chunk = s.recv(1024)
                if not chunk:
                    break
                rest += chunk
            assert rest[0] == 0x82 and rest[1] < 126, rest
            return rest[2 : 2 + rest[1]]


def test_terminal_socket_refuses_other_origins_and_strangers(page, broker, operator):
    sign_in(page, broker, operator.user_name, PASSWORD)
    page.get_by_role("heading", name="Managed instances").wait_for(timeout=15000)
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "airlock_console")
    assert upgrade(broker, broker.url, cookie) == 101  # the page's own origin with its cookie
    assert upgrade(broker, "https://evil.example", cookie) == 403
    assert upgrade(broker, None, cookie) == 403
    assert upgrade(broker, broker.url, None) == 401
    assert upgrade(broker, broker.url, "forged") == 401
    # The cookie alone opens nothing: the first message must carry the page's CSRF token.
    hello = bytes([0x01, 0, 80, 0, 24, 0, 5]) + b"wrong" + b"some-session-token"
    assert upgrade(broker, broker.url, cookie, first=hello) == b"\x95Missing or wrong CSRF token."
