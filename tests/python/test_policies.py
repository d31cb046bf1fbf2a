"""Identity policies enforced on the SSM API, seen through boto3 and the AWS CLI.

alice: ssm:* on *. dave: StartSession on instances tagged Environment=dev with the default
shell document, Describe* on *, TerminateSession on his own sessions only. mallory: nothing.
"""

import json
import re

import pytest

from conftest import REGION, SHELL_DOCUMENT, code_of, error_of, message_of

DENIED = "AccessDeniedException"


@pytest.fixture(scope="module")
def dev_agent(broker, admin):
    """An agent of its own, tagged Environment=dev (tests that change the tag put it back)."""
    a = broker.agent("policy-dev")
    admin.add_tags_to_resource(
        ResourceType="ManagedInstance", ResourceId=a.instance_id, Tags=[{"Key": "Environment", "Value": "dev"}]
    )
    return a


@pytest.fixture(scope="module")
def account(users):
    return users["alice"].account


def instance_arn(account, mi):
    return f"arn:airlock:ssm:{REGION}:{account}:managed-instance/{mi}"


def session_arn(account, sid):
    return f"arn:airlock:ssm:{REGION}:{account}:session/{sid}"


def set_environment(admin, mi, value):
    if value is None:
        admin.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=mi, TagKeys=["Environment"])
    else:
        admin.add_tags_to_resource(
            ResourceType="ManagedInstance", ResourceId=mi, Tags=[{"Key": "Environment", "Value": value}]
        )


def assert_denied(e, who, action, resource=None):
    """The refusal names the principal, the action and (when given) the resource."""
    assert code_of(e) == DENIED, e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    msg = message_of(e)
    assert f"User: {who.arn} is not authorized to perform: {action}" in msg, msg
    if resource is not None:
        assert f"on resource: {resource}" in msg, msg


def assert_cli_denied(r, who, action, operation):
    assert r.code != 0, r.stdout
    assert f"An error occurred ({DENIED}) when calling the {operation} operation" in r.stderr, r.stderr
    assert who.arn in r.stderr and action in r.stderr, r.stderr


# --- dave: StartSession only while the instance is tagged dev ------------------------------------


def test_dave_starts_a_session_on_a_dev_instance(broker, users, dev_agent):
    dave = broker.client(users["dave"].creds)
    resp = dave.start_session(Target=dev_agent.instance_id)
    assert resp["SessionId"].startswith("dave-"), resp
    assert resp["TokenValue"] and resp["StreamUrl"]
    # with the default document named explicitly, too
    resp2 = dave.start_session(Target=dev_agent.instance_id, DocumentName=SHELL_DOCUMENT)
    assert resp2["SessionId"].startswith("dave-")
    for sid in (resp["SessionId"], resp2["SessionId"]):
        assert dave.terminate_session(SessionId=sid)["SessionId"] == sid


def test_dave_is_denied_when_the_tag_is_removed_or_changed(broker, admin, users, dev_agent, account):
    dave = broker.client(users["dave"].creds)
    mi = dev_agent.instance_id
    try:
        set_environment(admin, mi, None)
        e = error_of(dave.start_session, Target=mi)
        assert_denied(e, users["dave"], "ssm:StartSession", instance_arn(account, mi))

        set_environment(admin, mi, "prod")
        e = error_of(dave.start_session, Target=mi)
        assert_denied(e, users["dave"], "ssm:StartSession", instance_arn(account, mi))
        r = broker.aws(["ssm", "start-session", "--target", mi], creds=users["dave"].creds)
        assert_cli_denied(r, users["dave"], "ssm:StartSession", "StartSession")

        # "Dev" is not "dev": StringEquals is case-sensitive on values
        set_environment(admin, mi, "Dev")
        assert code_of(error_of(dave.start_session, Target=mi)) == DENIED
    finally:
        set_environment(admin, mi, "dev")
    sid = dave.start_session(Target=mi)["SessionId"]
    dave.terminate_session(SessionId=sid)


def test_dave_cannot_use_another_document(broker, users, dev_agent, account):
    dave = broker.client(users["dave"].creds)
    e = error_of(
        dave.start_session,
        Target=dev_agent.instance_id,
        DocumentName="AWS-StartPortForwardingSession",
        Parameters={"portNumber": ["22"], "localPortNumber": ["0"]},
    )
    assert_denied(
        e, users["dave"], "ssm:StartSession", f"arn:airlock:ssm:{REGION}::document/AWS-StartPortForwardingSession"
    )


def test_dave_cannot_retag_his_way_in(broker, users, dev_agent, account):
    """Tagging needs ssm:AddTagsToResource, which dave does not have."""
    dave = broker.client(users["dave"].creds)
    mi = dev_agent.instance_id
    e = error_of(
        dave.add_tags_to_resource,
        ResourceType="ManagedInstance", ResourceId=mi, Tags=[{"Key": "Environment", "Value": "dev"}],
    )
    assert_denied(e, users["dave"], "ssm:AddTagsToResource", instance_arn(account, mi))
    r = broker.aws(
        ["ssm", "add-tags-to-resource", "--resource-type", "ManagedInstance", "--resource-id", mi,
         "--tags", "Key=Environment,Value=dev"],
        creds=users["dave"].creds,
    )
    assert_cli_denied(r, users["dave"], "ssm:AddTagsToResource", "AddTagsToResource")
    e = error_of(dave.get_connection_status, Target=mi)
    assert_denied(e, users["dave"], "ssm:GetConnectionStatus", instance_arn(account, mi))


def test_dave_terminates_his_own_sessions_but_not_alices(broker, users, dev_agent, account):
    dave = broker.client(users["dave"].creds)
    alice = broker.client(users["alice"].creds)
    mine = dave.start_session(Target=dev_agent.instance_id)["SessionId"]
    hers = alice.start_session(Target=dev_agent.instance_id)["SessionId"]
    assert hers.startswith("alice-")
    try:
        e = error_of(dave.terminate_session, SessionId=hers)
        assert_denied(e, users["dave"], "ssm:TerminateSession", session_arn(account, hers))
        r = broker.aws(["ssm", "terminate-session", "--session-id", hers], creds=users["dave"].creds)
        assert_cli_denied(r, users["dave"], "ssm:TerminateSession", "TerminateSession")
        assert broker.session(hers, "Active") is not None, "a denied terminate must not end the session"

        r = broker.aws(["ssm", "terminate-session", "--session-id", mine], creds=users["dave"].creds)
        assert r.code == 0, r.stderr
        assert r.json == {"SessionId": mine}
        assert broker.wait_history(mine)["Status"] == "Terminated"
    finally:
        alice.terminate_session(SessionId=hers)


def test_dave_can_read_with_boto3_and_the_cli(broker, users, dev_agent):
    dave = broker.client(users["dave"].creds)
    listed = [i["InstanceId"] for i in dave.describe_instance_information()["InstanceInformationList"]]
    assert dev_agent.instance_id in listed
    assert isinstance(dave.describe_sessions(State="History")["Sessions"], list)
    r = broker.aws(["ssm", "describe-instance-information"], creds=users["dave"].creds)
    assert r.code == 0, r.stderr
    assert dev_agent.instance_id in [i["InstanceId"] for i in r.json["InstanceInformationList"]]
    r = broker.aws(["ssm", "describe-sessions", "--state", "Active"], creds=users["dave"].creds)
    assert r.code == 0, r.stderr


# --- alice: everything ------------------------------------------------------------------------------


def test_alice_may_do_everything_on_ssm(broker, users, dev_agent, unique):
    alice = broker.client(users["alice"].creds)
    mi = dev_agent.instance_id
    sid = alice.start_session(Target=mi)["SessionId"]
    assert sid.startswith("alice-")
    assert alice.get_connection_status(Target=mi)["Status"] == "connected"
    alice.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=mi, Tags=[{"Key": "Seen", "Value": unique}])
    tags = alice.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=mi)["TagList"]
    assert {"Key": "Seen", "Value": unique} in tags
    alice.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=mi, TagKeys=["Seen"])
    creds = users["alice"].creds
    for args in (
        ["ssm", "describe-sessions", "--state", "Active", "--filters", f"key=SessionId,value={sid}"],
        ["ssm", "get-connection-status", "--target", mi],
        ["ssm", "add-tags-to-resource", "--resource-type", "ManagedInstance", "--resource-id", mi,
         "--tags", f"Key=Seen,Value={unique}"],
        ["ssm", "terminate-session", "--session-id", sid],
    ):
        r = broker.aws(args, creds=creds)
        assert r.code == 0, f"{args}: {r.stderr}"
    assert broker.wait_history(sid)["Owner"] == users["alice"].arn


# --- mallory: nothing ---------------------------------------------------------------------------------


def test_mallory_is_denied_everything_with_boto3(broker, admin, users, dev_agent, account):
    mallory = broker.client(users["mallory"].creds)
    m = users["mallory"]
    mi = dev_agent.instance_id
    victim = admin.start_session(Target=mi)["SessionId"]
    try:
        cases = [
            (mallory.describe_instance_information, {}, "ssm:DescribeInstanceInformation", "*"),
            (mallory.describe_sessions, {"State": "Active"}, "ssm:DescribeSessions", "*"),
            (mallory.start_session, {"Target": mi}, "ssm:StartSession", None),
            (mallory.terminate_session, {"SessionId": victim}, "ssm:TerminateSession", session_arn(account, victim)),
            (mallory.get_connection_status, {"Target": mi}, "ssm:GetConnectionStatus", instance_arn(account, mi)),
            (mallory.create_activation, {"IamRole": "x"}, "ssm:CreateActivation", "*"),
            (
                mallory.add_tags_to_resource,
                {"ResourceType": "ManagedInstance", "ResourceId": mi, "Tags": [{"Key": "k", "Value": "v"}]},
                "ssm:AddTagsToResource",
                instance_arn(account, mi),
            ),
            (
                mallory.list_tags_for_resource,
                {"ResourceType": "ManagedInstance", "ResourceId": mi},
                "ssm:ListTagsForResource",
                instance_arn(account, mi),
            ),
        ]
        for call, kwargs, action, resource in cases:
            e = error_of(call, **kwargs)
            assert_denied(e, m, action, resource)
            assert "because no identity-based policy allows the" in message_of(e), message_of(e)
        assert broker.session(victim, "Active") is not None
    finally:
        admin.terminate_session(SessionId=victim)


def test_mallory_is_denied_everything_with_the_cli(broker, users, dev_agent):
    m = users["mallory"]
    mi = dev_agent.instance_id
    for args, action, op in (
        (["ssm", "describe-instance-information"], "ssm:DescribeInstanceInformation", "DescribeInstanceInformation"),
        (["ssm", "describe-sessions", "--state", "Active"], "ssm:DescribeSessions", "DescribeSessions"),
        (["ssm", "get-connection-status", "--target", mi], "ssm:GetConnectionStatus", "GetConnectionStatus"),
        (["ssm", "terminate-session", "--session-id", "admin-0123456789abcdef0"], "ssm:TerminateSession",
         "TerminateSession"),
        (["ssm", "add-tags-to-resource", "--resource-type", "ManagedInstance", "--resource-id", mi,
          "--tags", "Key=Environment,Value=dev"], "ssm:AddTagsToResource", "AddTagsToResource"),
        (["ssm", "start-session", "--target", mi], "ssm:StartSession", "StartSession"),
    ):
        assert_cli_denied(broker.aws(args, creds=m.creds), m, action, op)


def test_session_decisions_are_audited(broker, users, dev_agent):
    """A denied StartSession is an audit event naming who, what and which resource."""
    dave = broker.client(users["dave"].creds)
    mallory = broker.client(users["mallory"].creds)
    error_of(mallory.start_session, Target=dev_agent.instance_id)
    sid = dave.start_session(Target=dev_agent.instance_id)["SessionId"]
    dave.terminate_session(SessionId=sid)
    events = broker.iam("ListAuditEvents", {"MaxResults": 50})["Events"]
    denied = [
        e for e in events
        if e["Principal"] == users["mallory"].arn and e["Action"] == "ssm:StartSession"
    ]
    assert denied, events[:5]
    assert "deny" in denied[0]["Decision"].lower(), denied[0]
    allowed = [
        e for e in events
        if e["Principal"] == users["dave"].arn and e["Action"] == "ssm:StartSession"
        and "allow" in e["Decision"].lower()
    ]
    assert allowed, events[:5]
    assert any("dev-sessions" in (e.get("Policy") or "") for e in allowed), allowed


# --- policy documents ------------------------------------------------------------------------------------


def put_policy(broker, user, name, document):
    return broker.call(
        "AirlockIAM.PutUserPolicy", {"UserName": user, "PolicyName": name, "PolicyDocument": document}
    )


def test_malformed_json_policy_is_refused_with_line_and_column(broker, users):
    doc = '{\n  "Version": "2012-10-17",\n  "Statement": [\n    {"Effect": "Allow",, "Action": "*"}\n  ]\n}'
    status, body = put_policy(broker, "mallory", "broken", doc)
    assert status == 400, body
    assert body["__type"].split("#")[-1] == "MalformedPolicyDocument", body
    msg = body.get("message") or body.get("Message", "")
    assert re.search(r"line 4", msg) and re.search(r"column \d+", msg), msg


@pytest.mark.parametrize(
    "statement, named",
    [
        ({"Effect": "Permit", "Action": "ssm:StartSession", "Resource": "*"}, "Permit"),
        (
            {"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*",
             "Condition": {"StringEqualz": {"ssm:resourceTag/Environment": "dev"}}},
            "StringEqualz",
        ),
        ({"Effect": "Allow", "Action": "ssn:StartSession", "Resource": "*"}, "ssn:StartSession"),
    ],
    ids=["unknown-effect", "unknown-operator", "unknown-action-prefix"],
)
def test_invalid_policy_is_refused_naming_the_value(broker, users, statement, named):
    status, body = put_policy(broker, "mallory", "invalid", json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    assert status == 400, body
    assert body["__type"].split("#")[-1] == "MalformedPolicyDocument", body
    msg = body.get("message") or body.get("Message", "")
    assert named in msg, msg
    # nothing was stored: mallory still has no inline policy
    names = broker.iam("ListUserPolicies", {"UserName": "mallory"})["PolicyNames"]
    assert "invalid" not in names


# --- SimulatePrincipalPolicy -----------------------------------------------------------------------------


def test_simulate_principal_policy_for_dave(broker, users, dev_agent, account):
    arn = instance_arn(account, dev_agent.instance_id)
    base = {"PolicySourceArn": users["dave"].arn, "ActionNames": ["ssm:StartSession"], "ResourceArns": [arn]}
    with_tag = dict(
        base,
        ContextEntries=[
            {"ContextKeyName": "ssm:resourceTag/Environment", "ContextKeyValues": ["dev"], "ContextKeyType": "string"}
        ],
    )
    result = broker.iam("SimulatePrincipalPolicy", with_tag)["EvaluationResults"]
    assert len(result) == 1, result
    r = result[0]
    assert r["EvalActionName"] == "ssm:StartSession"
    assert r["EvalResourceName"] == arn
    assert r["EvalDecision"] == "allowed", r
    matched = r["MatchedStatements"]
    assert any(m["SourcePolicyId"] == "dev-sessions" and m.get("Sid") == "StartOnDev" for m in matched), matched
    assert any(m.get("StatementIndex") == 0 for m in matched), matched

    result = broker.iam("SimulatePrincipalPolicy", base)["EvaluationResults"]
    assert result[0]["EvalDecision"] == "implicitDeny", result

    wrong = dict(base, ContextEntries=[
        {"ContextKeyName": "ssm:resourceTag/Environment", "ContextKeyValues": ["prod"], "ContextKeyType": "string"}
    ])
    assert broker.iam("SimulatePrincipalPolicy", wrong)["EvaluationResults"][0]["EvalDecision"] == "implicitDeny"

    # mallory may not simulate (iam:SimulatePrincipalPolicy is not hers)
    status, body = broker.call("AirlockIAM.SimulatePrincipalPolicy", base, users["mallory"].creds)
    assert status in (400, 403) and body["__type"].split("#")[-1] == "AccessDenied", (status, body)
