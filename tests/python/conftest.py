"""Harness for the acceptance tests: the real airlock-broker and airlock-agent binaries on
127.0.0.1 ephemeral ports in temp folders, driven with the stock AWS clients (boto3 and the
AWS CLI v1 installed in the same venv as pytest).

Every wait is a poll with an upper bound. Every process started here is killed at teardown.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import boto3
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("AIRLOCK_BIN_DIR", ROOT / "target" / "debug"))
REGION = "us-east-1"
JSON_11 = "application/x-amz-json-1.1"
SHELL_DOCUMENT = "SSM-SessionManagerRunShell"


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.exit(
            f"{path} is missing: build the workspace binaries first (cargo build --workspace --bins)",
            returncode=2,
        )
    return path


def aws_cli() -> Path:
    """The `aws` entry point of the venv running pytest."""
    path = Path(sys.executable).parent / "aws"
    if not path.exists():
        found = shutil.which("aws")
        if not found:
            pytest.exit("the AWS CLI (awscli) is not installed in this venv", returncode=2)
        path = Path(found)
    return path


def wait_for(what: str, limit: float, f: Callable[[], Any], every: float = 0.1) -> Any:
    """Polls `f` until it returns something truthy; fails after `limit` seconds."""
    deadline = time.monotonic() + limit
    last = None
    while True:
        last = f()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what} (last: {last!r})")
        time.sleep(every)


@dataclass
class Creds:
    """A principal's credentials, as a client would be configured with them."""

    key_id: str
    secret: str
    token: Optional[str] = None
    name: str = ""
    arn: str = ""

    def env(self) -> dict[str, str]:
        env = {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}
        if self.token:
            env["AWS_SESSION_TOKEN"] = self.token
        return env


@dataclass
class CliResult:
    code: int
    json: Any
    stdout: str
    stderr: str

    def error_code(self) -> Optional[str]:
        """The code in the CLI's `An error occurred (<Code>) when calling …` line."""
        m = re.search(r"An error occurred \(([^)]+)\) when calling the (\w+) operation", self.stderr)
        return m.group(1) if m else None


def error_of(call: Callable[..., Any], *args: Any, **kwargs: Any) -> ClientError:
    """Runs a boto3 call that must fail and returns its ClientError."""
    try:
        result = call(*args, **kwargs)
    except ClientError as e:
        return e
    raise AssertionError(f"expected a ClientError, the call succeeded: {result!r}")


def code_of(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def message_of(e: ClientError) -> str:
    return e.response["Error"].get("Message", "")


class Broker:
    """A running `airlock-broker serve` with its admin credentials."""

    def __init__(self, root: Path, name: str = "broker"):
        self.root = root
        self.data_dir = root / name
        self.ca_file = self.data_dir / "ca.pem"
        self.log_path = root / f"{name}.log"
        self.procs: list[subprocess.Popen] = []
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, AIRLOCK_LOG="info,airlock_broker=debug")
        self.proc = subprocess.Popen(
            [str(binary("airlock-broker")), "serve", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self.procs.append(self.proc)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                lines.put(raw.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        key_id = secret = url = ""
        deadline = time.monotonic() + 30
        while not url:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.close()
                raise AssertionError(f"broker did not start:\n{self.log()}")
            if line.startswith("AWS_ACCESS_KEY_ID="):
                key_id = line.split("=", 1)[1]
            elif line.startswith("AWS_SECRET_ACCESS_KEY="):
                secret = line.split("=", 1)[1]
            elif line.startswith("airlock-broker listening on "):
                url = line[len("airlock-broker listening on "):].split()[0]
        assert key_id and secret, "the broker printed no admin key on first start"
        self.url = url.rstrip("/")
        self.admin = Creds(key_id, secret, name="admin")
        self.http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(self.ca_file))
        self.agents: list[Agent] = []

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")[-8000:]
            return re.sub(r"\x1b\[[0-9;]*m", "", text)
        except OSError:
            return ""

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()

    # --- boto3 -----------------------------------------------------------------------------

    def client(self, creds: Creds, service: str = "ssm"):
        """A stock boto3 client pointed at this broker, trusting its CA."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=creds.key_id,
            aws_secret_access_key=creds.secret,
            aws_session_token=creds.token,
            verify=str(self.ca_file),
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30),
        )

    # --- raw signed calls (AirlockIAM.*, AirlockSTS.*: no boto3 model) -----------------------

    def call(self, target: str, body: dict, creds: Optional[Creds] = None) -> tuple[int, Any]:
        """POSTs a SigV4-signed JSON 1.1 request with `X-Amz-Target: <target>`."""
        creds = creds or self.admin
        data = json.dumps(body)
        req = AWSRequest(
            method="POST",
            url=self.url + "/",
            data=data,
            headers={"Content-Type": JSON_11, "X-Amz-Target": target},
        )
        SigV4Auth(Credentials(creds.key_id, creds.secret, creds.token), "ssm", REGION).add_auth(req)
        prepared = req.prepare()
        resp = self.http.request(
            "POST", prepared.url, body=prepared.body, headers=dict(prepared.headers), timeout=30.0, retries=False
        )
        text = resp.data.decode(errors="replace")
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            value = text
        return resp.status, value

    def iam(self, op: str, body: dict, creds: Optional[Creds] = None) -> dict:
        """An `AirlockIAM.<op>` / `AirlockSTS.<op>` call that must succeed."""
        target = op if "." in op else f"AirlockIAM.{op}"
        status, value = self.call(target, body, creds)
        assert status == 200, f"{target} {body} -> HTTP {status}: {value}"
        return value

    # --- the AWS CLI --------------------------------------------------------------------------

    def aws(self, args: list[str], creds: Optional[Creds] = None, path_prepend: Optional[Path] = None,
            extra_env: Optional[dict] = None) -> CliResult:
        """Runs `aws ssm …` (or any `aws` command given in args) with only these credentials."""
        creds = creds or self.admin
        home = self.root / "cli-home"
        home.mkdir(exist_ok=True)
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if path_prepend:
            path = f"{path_prepend}{os.pathsep}{path}"
        env = {
            "PATH": path,
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "AWS_CA_BUNDLE": str(self.ca_file),
            "AWS_CONFIG_FILE": str(home / "nonexistent-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "nonexistent-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            **creds.env(),
            **(extra_env or {}),
        }
        cmd = [str(aws_cli()), *args, "--endpoint-url", self.url, "--region", REGION, "--output", "json"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        parsed = None
        if out.stdout.strip():
            try:
                parsed = json.loads(out.stdout)
            except ValueError:
                parsed = None
        return CliResult(out.returncode, parsed, out.stdout, out.stderr)

    # --- agents ---------------------------------------------------------------------------------

    def activation(self, tags: Optional[list[dict]] = None, limit: int = 1) -> tuple[str, str]:
        kwargs: dict[str, Any] = {"IamRole": "airlock-pytest", "RegistrationLimit": limit}
        if tags:
            kwargs["Tags"] = tags
        resp = self.client(self.admin).create_activation(**kwargs)
        return resp["ActivationId"], resp["ActivationCode"]

    def register(self, name: str, tags: Optional[list[dict]] = None,
                 activation: Optional[tuple[str, str]] = None) -> tuple[Path, str]:
        """Registers a host (without running it) with `activation` (id, code), or a new one
        carrying `tags`; returns its data folder and instance id."""
        activation_id, code = activation or self.activation(tags)
        data = self.root / f"agent-{name}"
        out = subprocess.run(
            [str(binary("airlock-agent")), "register", "--data-dir", str(data), "--endpoint", self.url,
             "--activation-code", code, "--activation-id", activation_id, "--ca-file", str(self.ca_file)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, f"airlock-agent register failed: {out.stderr}"
        state = json.loads((data / "agent.json").read_text())
        return data, state["instance_id"]

    def agent(self, name: str, tags: Optional[list[dict]] = None) -> "Agent":
        """Registers and runs an agent, and waits until the broker shows it Online."""
        data, instance_id = self.register(name, tags)
        log = open(self.root / f"agent-{name}.log", "wb")
        proc = subprocess.Popen(
            [str(binary("airlock-agent")), "run", "--data-dir", str(data)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, SHELL="/bin/bash"),
        )
        log.close()
        self.procs.append(proc)
        agent = Agent(instance_id, data, proc)
        self.wait_online(instance_id)
        self.agents.append(agent)
        return agent

    def instance_info(self, instance_id: str) -> Optional[dict]:
        resp = self.client(self.admin).describe_instance_information(
            InstanceInformationFilterList=[{"key": "InstanceIds", "valueSet": [instance_id]}]
        )
        for i in resp["InstanceInformationList"]:
            if i["InstanceId"] == instance_id:
                return i
        return None

    def wait_online(self, instance_id: str) -> dict:
        def online() -> Optional[dict]:
            info = self.instance_info(instance_id)
            return info if info and info.get("PingStatus") == "Online" else None

        return wait_for(f"{instance_id} to be Online", 30, online)

    # --- sessions ------------------------------------------------------------------------------

    def session(self, session_id: str, state: str) -> Optional[dict]:
        resp = self.client(self.admin).describe_sessions(
            State=state, Filters=[{"key": "SessionId", "value": session_id}]
        )
        for s in resp["Sessions"]:
            if s["SessionId"] == session_id:
                return s
        return None

    def wait_history(self, session_id: str, limit: float = 20) -> dict:
        return wait_for(f"{session_id} in History", limit, lambda: self.session(session_id, "History"))


@dataclass
class Agent:
    instance_id: str
    data_dir: Path
    proc: subprocess.Popen


@dataclass
class Identity:
    """A user made through AirlockIAM, with an access key and its inline policies."""

    creds: Creds
    user_name: str
    arn: str
    account: str
    policies: dict[str, str] = field(default_factory=dict)


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, indent=2)


ALICE_POLICY = policy({"Sid": "All", "Effect": "Allow", "Action": "ssm:*", "Resource": "*"})

DAVE_POLICY = policy(
    {
        "Sid": "StartOnDev",
        "Effect": "Allow",
        "Action": "ssm:StartSession",
        "Resource": "arn:airlock:ssm:*:*:managed-instance/*",
        "Condition": {"StringEquals": {"ssm:resourceTag/Environment": "dev"}},
    },
    {
        "Sid": "ShellDocument",
        "Effect": "Allow",
        "Action": "ssm:StartSession",
        "Resource": f"arn:airlock:ssm:*::document/{SHELL_DOCUMENT}",
    },
    {
        "Sid": "Read",
        "Effect": "Allow",
        "Action": ["ssm:DescribeInstanceInformation", "ssm:DescribeSessions"],
        "Resource": "*",
    },
    {
        "Sid": "OwnSessions",
        "Effect": "Allow",
        "Action": "ssm:TerminateSession",
        "Resource": "arn:airlock:ssm:*:*:session/${aws:username}-*",
    },
)


def make_user(broker: Broker, name: str, policies: Optional[dict[str, str]] = None) -> Identity:
    """CreateUser + CreateAccessKey + PutUserPolicy, all as the admin."""
    user = broker.iam("CreateUser", {"UserName": name})["User"]
    assert user["UserName"] == name, user
    assert user["UserId"].startswith("AIDA"), user
    arn = user["Arn"]
    m = re.fullmatch(r"arn:airlock:iam::([^:]+):user/(.+)", arn)
    assert m and m.group(2) == name, f"unexpected user ARN {arn}"
    key = broker.iam("CreateAccessKey", {"UserName": name})["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA"), key
    assert key["Status"] == "Active", key
    for pname, doc in (policies or {}).items():
        broker.iam("PutUserPolicy", {"UserName": name, "PolicyName": pname, "PolicyDocument": doc})
    creds = Creds(key["AccessKeyId"], key["SecretAccessKey"], name=name, arn=arn)
    return Identity(creds, name, arn, m.group(1), dict(policies or {}))


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="airlock-pytest-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(workdir):
    """One broker shared by the whole run (each test module isolates itself by its own agents,
    users and tag values)."""
    b = Broker(workdir)
    yield b
    b.close()


@pytest.fixture(scope="session")
def bare_broker(workdir):
    """A second broker with no agent and no session: for checks that must not depend on data."""
    b = Broker(workdir, name="bare-broker")
    yield b
    b.close()


@pytest.fixture(scope="session")
def admin(broker):
    return broker.client(broker.admin)


@pytest.fixture(scope="session")
def agent(broker):
    """The default agent, Online."""
    return broker.agent("main")


@pytest.fixture(scope="session")
def users(broker) -> dict[str, Identity]:
    """alice (ssm:* on *), dave (tag-scoped StartSession, own sessions), mallory (no policy)."""
    return {
        "alice": make_user(broker, "alice", {"ssm-all": ALICE_POLICY}),
        "dave": make_user(broker, "dave", {"dev-sessions": DAVE_POLICY}),
        "mallory": make_user(broker, "mallory"),
    }


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the tail of the broker's log next to the traceback."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name in ("broker", "bare_broker"):
            b = getattr(item, "funcargs", {}).get(name)
            if isinstance(b, Broker):
                tail = "\n".join(b.log().splitlines()[-25:])
                report.sections.append((f"{name} log (tail)", tail))
