"""Authentication as the stock clients see it: bad and inactive keys, and temporary
credentials from AirlockSTS.AssumeRole (x-amz-security-token).

Expiry (ExpiredTokenException): DurationSeconds is at least 900, so instead of waiting the
test moves the key's expiry into the past in the broker's SQLite store (the only white-box
step in this suite; it names the schema it relies on when that changes).
"""

import re
import sqlite3
import time
from datetime import datetime

import pytest

from conftest import Creds, code_of, error_of, make_user, message_of, policy

BAD_TOKEN_CODES = {"UnrecognizedClientException", "InvalidClientTokenId"}


def test_wrong_secret_is_an_invalid_signature(broker):
    creds = Creds(broker.admin.key_id, "x" * 40)
    e = error_of(broker.client(creds).describe_sessions, State="Active")
    assert code_of(e) == "InvalidSignatureException", e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    r = broker.aws(["ssm", "describe-sessions", "--state", "Active"], creds=creds)
    assert r.code != 0
    assert r.error_code() == "InvalidSignatureException", r.stderr
    assert "when calling the DescribeSessions operation" in r.stderr


def test_unknown_key_id_looks_like_a_bad_signature(broker):
    # Deliberately unlike AWS (UnrecognizedClientException): an unsigned caller must not be
    # able to tell which key ids exist, so an unknown key answers as a wrong secret does.
    creds = Creds("AKIAZZZZZZZZZZZZZZZZ", broker.admin.secret)
    e = error_of(broker.client(creds).describe_instance_information)
    assert code_of(e) == "InvalidSignatureException", e.response
    wrong_secret = error_of(broker.client(Creds(broker.admin.key_id, "x" * 40)).describe_instance_information)
    assert e.response["Error"] == wrong_secret.response["Error"]
    r = broker.aws(["ssm", "describe-instance-information"], creds=creds)
    assert r.error_code() == "InvalidSignatureException", r.stderr


def test_deactivated_key_is_unrecognized_until_reactivated(broker):
    carol = make_user(broker, "carol", {"read": policy(
        {"Effect": "Allow", "Action": "ssm:DescribeSessions", "Resource": "*"})})
    client = broker.client(carol.creds)
    assert isinstance(client.describe_sessions(State="Active")["Sessions"], list)

    key = {"UserName": "carol", "AccessKeyId": carol.creds.key_id}
    broker.iam("UpdateAccessKey", dict(key, Status="Inactive"))
    listed = broker.iam("ListAccessKeys", {"UserName": "carol"})["AccessKeyMetadata"]
    assert [k["Status"] for k in listed if k["AccessKeyId"] == carol.creds.key_id] == ["Inactive"]
    e = error_of(client.describe_sessions, State="Active")
    assert code_of(e) == "UnrecognizedClientException", e.response
    r = broker.aws(["ssm", "describe-sessions", "--state", "Active"], creds=carol.creds)
    assert r.error_code() == "UnrecognizedClientException", r.stderr

    broker.iam("UpdateAccessKey", dict(key, Status="Active"))
    assert isinstance(client.describe_sessions(State="Active")["Sessions"], list)

    broker.iam("DeleteAccessKey", key)
    # A deleted key is unknown: it answers as a bad signature does.
    assert code_of(error_of(client.describe_sessions, State="Active")) == "InvalidSignatureException"


# --- assumed roles ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_role(broker, users):
    role = broker.iam("CreateRole", {"RoleName": "operator"})["Role"]
    assert role["RoleId"].startswith("AROA"), role
    assert re.fullmatch(r"arn:airlock:iam::[^:]+:role/operator", role["Arn"]), role
    broker.iam("PutRolePolicy", {
        "RoleName": "operator",
        "PolicyName": "describe-sessions",
        "PolicyDocument": policy({"Effect": "Allow", "Action": "ssm:DescribeSessions", "Resource": "*"}),
    })
    broker.iam("PutUserPolicy", {
        "UserName": "alice",
        "PolicyName": "assume-operator",
        "PolicyDocument": policy({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}),
    })
    return role


def assume(broker, creds, role_arn, session_name="pytest", duration=900):
    return broker.call(
        "AirlockSTS.AssumeRole",
        {"RoleArn": role_arn, "RoleSessionName": session_name, "DurationSeconds": duration},
        creds,
    )


def epoch(value):
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def temporary(broker, users, operator_role):
    status, body = assume(broker, users["alice"].creds, operator_role["Arn"], "alice-ops")
    assert status == 200, body
    c = body["Credentials"]
    return body, Creds(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], name="alice-ops",
                       arn=body["AssumedRoleUser"]["Arn"])


def test_assume_role_returns_temporary_credentials(users, operator_role, temporary):
    body, creds = temporary
    assert creds.key_id.startswith("ASIA"), creds.key_id
    assert creds.secret and creds.token
    left = epoch(body["Credentials"]["Expiration"]) - time.time()
    assert 800 < left <= 905, f"Expiration is {left:.0f}s away, wanted ~900"
    account = users["alice"].account
    user = body["AssumedRoleUser"]
    assert user["Arn"] == f"arn:airlock:sts::{account}:assumed-role/operator/alice-ops", user
    assert user["AssumedRoleId"].startswith(operator_role["RoleId"]), user
    assert user["AssumedRoleId"].endswith(":alice-ops"), user


def test_temporary_credentials_work_with_boto3_within_the_role_policy(broker, agent, temporary):
    _, creds = temporary
    client = broker.client(creds)
    assert isinstance(client.describe_sessions(State="Active")["Sessions"], list)
    e = error_of(client.start_session, Target=agent.instance_id)
    assert code_of(e) == "AccessDeniedException", e.response
    assert f"User: {creds.arn} is not authorized to perform: ssm:StartSession" in message_of(e), message_of(e)
    e = error_of(client.describe_instance_information)
    assert code_of(e) == "AccessDeniedException", e.response


def test_temporary_credentials_work_with_the_cli(broker, temporary):
    _, creds = temporary
    r = broker.aws(["ssm", "describe-sessions", "--state", "History"], creds=creds)
    assert r.code == 0, r.stderr
    assert isinstance(r.json["Sessions"], list)
    r = broker.aws(["ssm", "describe-instance-information"], creds=creds)
    assert r.error_code() == "AccessDeniedException", r.stderr
    assert creds.arn in r.stderr


def test_tampered_or_missing_session_token_is_refused(broker, temporary):
    _, creds = temporary
    flipped = creds.token[:-6] + ("A" if creds.token[-6] != "A" else "B") + creds.token[-5:]
    for token in (flipped, "not-a-session-token", None):
        bad = Creds(creds.key_id, creds.secret, token)
        e = error_of(broker.client(bad).describe_sessions, State="Active")
        assert code_of(e) in BAD_TOKEN_CODES, (token, e.response)
    r = broker.aws(["ssm", "describe-sessions", "--state", "Active"],
                   creds=Creds(creds.key_id, creds.secret, "not-a-session-token"))
    assert r.error_code() in BAD_TOKEN_CODES, r.stderr
    # a long-term key does not take a session token
    with_token = Creds(broker.admin.key_id, broker.admin.secret, creds.token)
    assert code_of(error_of(broker.client(with_token).describe_sessions, State="Active")) in BAD_TOKEN_CODES
    # the right token with the wrong secret is a bad signature
    wrong_secret = Creds(creds.key_id, "y" * 40, creds.token)
    e = error_of(broker.client(wrong_secret).describe_sessions, State="Active")
    assert code_of(e) == "InvalidSignatureException", e.response


def test_assume_role_needs_sts_assume_role(broker, users, operator_role):
    for who in ("dave", "mallory"):
        status, body = assume(broker, users[who].creds, operator_role["Arn"])
        assert status in (400, 403), body
        assert body["__type"].split("#")[-1] == "AccessDenied", body
        assert users[who].arn in body["message"] and "sts:AssumeRole" in body["message"], body


@pytest.mark.parametrize("duration", [899, 43201])
def test_assume_role_duration_is_bounded(broker, users, operator_role, duration):
    status, body = assume(broker, users["alice"].creds, operator_role["Arn"], duration=duration)
    assert status == 400, body
    assert body["__type"].split("#")[-1] in {"InvalidInput", "ValidationError", "ValidationException"}, body


def test_expired_temporary_credentials_are_expired_token(bare_broker):
    """Credentials past their Expiration get ExpiredTokenException (boto3 and the CLI)."""
    b = bare_broker
    role = b.iam("CreateRole", {"RoleName": "expiring"})["Role"]
    b.iam("PutRolePolicy", {
        "RoleName": "expiring",
        "PolicyName": "describe-sessions",
        "PolicyDocument": policy({"Effect": "Allow", "Action": "ssm:DescribeSessions", "Resource": "*"}),
    })
    status, body = assume(b, b.admin, role["Arn"], "soon-expired")
    assert status == 200, body
    c = body["Credentials"]
    creds = Creds(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    client = b.client(creds)
    assert isinstance(client.describe_sessions(State="Active")["Sessions"], list)

    db = sqlite3.connect(b.data_dir / "airlock.db", timeout=10)
    try:
        past_us = int((time.time() - 60) * 1_000_000)
        try:
            cur = db.execute("UPDATE access_keys SET expires_us = ? WHERE access_key_id = ?", (past_us, creds.key_id))
        except sqlite3.OperationalError as e:
            raise AssertionError(f"the store schema changed (access_keys.expires_us, microseconds): {e}")
        db.commit()
        assert cur.rowcount == 1, "temporary key not found in access_keys"
    finally:
        db.close()

    e = error_of(client.describe_sessions, State="Active")
    assert code_of(e) == "ExpiredTokenException", e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    r = b.aws(["ssm", "describe-sessions", "--state", "Active"], creds=creds)
    assert r.error_code() == "ExpiredTokenException", r.stderr
