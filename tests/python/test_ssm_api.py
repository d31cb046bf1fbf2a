"""The SSM operations with the stock clients, as the admin (AdministratorAccess)."""

import json
import re
import sys
import uuid

import pytest

from conftest import SHELL_DOCUMENT, wait_for

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def start(admin, target, **kwargs):
    resp = admin.start_session(Target=target, **kwargs)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    return resp


def ids(sessions):
    return [s["SessionId"] for s in sessions]


def test_describe_instance_information_shows_the_agent_online(admin, agent):
    resp = admin.describe_instance_information()
    by_id = {i["InstanceId"]: i for i in resp["InstanceInformationList"]}
    assert agent.instance_id in by_id, resp
    info = by_id[agent.instance_id]
    assert re.fullmatch(r"mi-[0-9a-f]{17}", info["InstanceId"])
    assert info["PingStatus"] == "Online"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)?", info["AgentVersion"]), info
    assert info["PlatformType"] == "Linux"
    assert info["IPAddress"], info
    assert info["ResourceType"] == "ManagedInstance"
    # boto3 parsed the epoch-seconds numbers into datetimes
    assert info["LastPingDateTime"].year >= 2024
    assert info["RegistrationDate"].year >= 2024


def test_session_lifecycle_start_describe_terminate(broker, admin, agent):
    resp = start(admin, agent.instance_id, Reason="pytest lifecycle")
    sid = resp["SessionId"]
    assert sid.startswith("admin-"), sid
    assert resp["TokenValue"]
    assert resp["StreamUrl"].startswith("wss://"), resp["StreamUrl"]
    assert sid in resp["StreamUrl"]

    active = admin.describe_sessions(State="Active")["Sessions"]
    assert sid in ids(active)
    mine = next(s for s in active if s["SessionId"] == sid)
    assert mine["Target"] == agent.instance_id
    assert mine["DocumentName"] == SHELL_DOCUMENT
    assert mine["Reason"] == "pytest lifecycle"
    assert re.fullmatch(r"arn:airlock:iam::[^:]+:user/admin", mine["Owner"]), mine["Owner"]
    assert mine["Status"] in ("Connecting", "Connected"), mine

    by_target = admin.describe_sessions(State="Active", Filters=[{"key": "Target", "value": agent.instance_id}])
    assert sid in ids(by_target["Sessions"])
    assert all(s["Target"] == agent.instance_id for s in by_target["Sessions"])
    other = admin.describe_sessions(State="Active", Filters=[{"key": "Target", "value": "mi-00000000000000000"}])
    assert other["Sessions"] == []

    assert admin.terminate_session(SessionId=sid)["SessionId"] == sid
    done = broker.wait_history(sid)
    assert done["Status"] == "Terminated", done
    assert "EndDate" in done
    assert sid not in ids(admin.describe_sessions(State="Active")["Sessions"])
    # terminating again is not an error (SSM's behaviour)
    assert admin.terminate_session(SessionId=sid)["SessionId"] == sid


def test_describe_sessions_pagination(broker, admin):
    pager_agent = broker.agent("pager")
    started = {start(admin, pager_agent.instance_id)["SessionId"] for _ in range(3)}
    target = [{"key": "Target", "value": pager_agent.instance_id}]
    try:
        seen, pages, token = [], 0, None
        while True:
            kwargs = {"State": "Active", "MaxResults": 1, "Filters": target}
            if token:
                kwargs["NextToken"] = token
            page = admin.describe_sessions(**kwargs)
            pages += 1
            assert len(page["Sessions"]) <= 1
            seen += ids(page["Sessions"])
            token = page.get("NextToken")
            if not token:
                break
            assert pages < 10, "NextToken never ran out"
        assert sorted(seen) == sorted(started), seen
        assert pages >= 3

        paginator = admin.get_paginator("describe_sessions")
        pages = list(paginator.paginate(State="Active", Filters=target, PaginationConfig={"PageSize": 1}))
        assert len(pages) >= 3
        assert sorted(s for p in pages for s in ids(p["Sessions"])) == sorted(started)
        full = paginator.paginate(State="Active", Filters=target, PaginationConfig={"PageSize": 2}).build_full_result()
        assert sorted(ids(full["Sessions"])) == sorted(started)
    finally:
        for sid in started:
            admin.terminate_session(SessionId=sid)
    for sid in started:
        assert broker.wait_history(sid)["Status"] == "Terminated"


def test_create_activation_with_tags_stamps_registered_instances(broker, admin, unique):
    resp = admin.create_activation(
        IamRole="pytest-role",
        Description="pytest",
        RegistrationLimit=2,
        Tags=[{"Key": "Team", "Value": f"t-{unique}"}],
    )
    assert UUID_RE.match(resp["ActivationId"]), resp
    assert 20 <= len(resp["ActivationCode"]) <= 250
    _, mi = broker.register(f"tagged-{unique}", activation=(resp["ActivationId"], resp["ActivationCode"]))
    tags = admin.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=mi)["TagList"]
    assert {"Key": "Team", "Value": f"t-{unique}"} in tags, tags
    found = admin.describe_instance_information(Filters=[{"Key": "tag:Team", "Values": [f"t-{unique}"]}])
    assert [i["InstanceId"] for i in found["InstanceInformationList"]] == [mi]


def test_tags_on_managed_instances(broker, admin, unique):
    tag_agent = broker.agent("tags")
    mi = tag_agent.instance_id
    admin.add_tags_to_resource(
        ResourceType="ManagedInstance", ResourceId=mi,
        Tags=[{"Key": "Environment", "Value": "dev"}, {"Key": "Owner", "Value": f"o-{unique}"}],
    )
    tags = admin.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=mi)["TagList"]
    assert {"Key": "Environment", "Value": "dev"} in tags
    assert {"Key": "Owner", "Value": f"o-{unique}"} in tags

    def listed(filters):
        resp = admin.describe_instance_information(Filters=filters)
        return [i["InstanceId"] for i in resp["InstanceInformationList"]]

    assert mi in listed([{"Key": "tag:Environment", "Values": ["dev"]}])
    assert listed([{"Key": "tag:Owner", "Values": [f"o-{unique}"]}]) == [mi]
    assert listed([{"Key": "tag:Owner", "Values": [f"nobody-{unique}"]}]) == []
    assert listed([{"Key": "tag:Environment", "Values": ["no-such-environment"]}]) == []
    assert mi in listed([{"Key": "tag-key", "Values": ["Owner"]}])

    admin.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=mi, TagKeys=["Owner"])
    tags = admin.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=mi)["TagList"]
    assert all(t["Key"] != "Owner" for t in tags), tags
    assert {"Key": "Environment", "Value": "dev"} in tags
    assert listed([{"Key": "tag:Owner", "Values": [f"o-{unique}"]}]) == []


def test_get_connection_status(admin, agent):
    resp = admin.get_connection_status(Target=agent.instance_id)
    assert resp["Target"] == agent.instance_id
    assert resp["Status"] == "connected"
    gone = admin.get_connection_status(Target="mi-0123456789abcdef0")
    assert gone["Status"] == "notconnected"


def test_aws_cli_as_admin(broker, agent):
    r = broker.aws(["ssm", "describe-instance-information"])
    assert r.code == 0, r.stderr
    info = {i["InstanceId"]: i for i in r.json["InstanceInformationList"]}
    assert info[agent.instance_id]["PingStatus"] == "Online"

    r = broker.aws(["ssm", "get-connection-status", "--target", agent.instance_id])
    assert r.code == 0, r.stderr
    assert r.json == {"Target": agent.instance_id, "Status": "connected"}

    r = broker.aws(["ssm", "create-activation", "--iam-role", "cli-role", "--registration-limit", "1"])
    assert r.code == 0, r.stderr
    assert UUID_RE.match(r.json["ActivationId"])

    r = broker.aws(["ssm", "describe-sessions", "--state", "History", "--max-results", "5"])
    assert r.code == 0, r.stderr
    assert isinstance(r.json["Sessions"], list)


def test_aws_cli_start_session_hands_the_response_to_the_plugin(broker, agent, workdir):
    """`aws ssm start-session` calls StartSession, then execs session-manager-plugin with the
    response; a stand-in plugin on PATH records what it was given."""
    plugin_dir = workdir / f"fake-plugin-{uuid.uuid4().hex[:6]}"
    plugin_dir.mkdir()
    record = plugin_dir / "argv.json"
    plugin = plugin_dir / "session-manager-plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    print('1.2.764.0'); sys.exit(0)\n"
        f"json.dump({{'argv': sys.argv, 'response': os.environ.get('AWS_SSM_START_SESSION_RESPONSE')}}, open({str(record)!r}, 'w'))\n"
    )
    plugin.chmod(0o755)
    r = broker.aws(["ssm", "start-session", "--target", agent.instance_id], path_prepend=plugin_dir)
    assert r.code == 0, r.stderr
    seen = json.loads(record.read_text())
    argv = seen["argv"]
    response = json.loads(seen["response"] if argv[1] == "AWS_SSM_START_SESSION_RESPONSE" else argv[1])
    sid = response["SessionId"]
    assert sid.startswith("admin-")
    assert response["TokenValue"] and response["StreamUrl"]
    assert argv[2] == "us-east-1" and argv[3] == "StartSession"
    assert json.loads(argv[5])["Target"] == agent.instance_id
    assert argv[6].rstrip("/") == broker.url
    r = broker.aws(["ssm", "terminate-session", "--session-id", sid])
    assert r.code == 0, r.stderr
    assert r.json == {"SessionId": sid}
    assert broker.wait_history(sid)["Status"] == "Terminated"
