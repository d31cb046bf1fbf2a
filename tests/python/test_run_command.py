"""Run Command with the stock clients: boto3 (its `command_executed` waiter included) and the
AWS CLI drive SendCommand, ListCommands, ListCommandInvocations, GetCommandInvocation and
CancelCommand against two real agents picked by a tag unique to the test."""

from conftest import code_of, error_of, wait_for

DOC = "AWS-RunShellScript"


def agents_tagged(broker, unique):
    tags = [{"Key": "RcGroup", "Value": unique}]
    return [broker.agent(f"rc-{unique}-{n}", tags=tags) for n in range(2)]


def test_boto3_drives_all_five_operations(broker, admin, unique):
    agents = agents_tagged(broker, unique)
    ids = sorted(a.instance_id for a in agents)
    targets = [{"Key": "tag:RcGroup", "Values": [unique]}]
    sent = admin.send_command(
        DocumentName=DOC, Targets=targets, Parameters={"commands": ["echo hello", "echo warn >&2"]},
        TimeoutSeconds=60, MaxConcurrency="50%", MaxErrors="0", Comment="pytest",
    )["Command"]
    command_id = sent["CommandId"]
    assert sent["DocumentName"] == DOC and sent["TargetCount"] == 2 and sent["Comment"] == "pytest"
    assert sent["MaxConcurrency"] == "50%" and sent["MaxErrors"] == "0"
    waiter = admin.get_waiter("command_executed")
    for i in ids:
        waiter.wait(CommandId=command_id, InstanceId=i, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        got = admin.get_command_invocation(CommandId=command_id, InstanceId=i)
        assert (got["Status"], got["ResponseCode"]) == ("Success", 0), got
        assert got["StandardOutputContent"] == "hello\n" and got["StandardErrorContent"] == "warn\n"
        assert got["PluginName"] == "aws:runShellScript" and got["ExecutionStartDateTime"], got
    command = wait_for("the command to finish", 30, lambda: (
        lambda c: c if c["Status"] == "Success" else None
    )(admin.list_commands(CommandId=command_id)["Commands"][0]))
    assert (command["CompletedCount"], command["ErrorCount"]) == (2, 0)
    invs = admin.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"]
    assert sorted(i["InstanceId"] for i in invs) == ids
    assert all(i["CommandPlugins"][0]["Output"].startswith("hello\n") for i in invs), invs
    assert any(c["CommandId"] == command_id for c in admin.list_commands()["Commands"])

    # Cancel a long command everywhere.
    long = admin.send_command(DocumentName=DOC, InstanceIds=ids, Parameters={"commands": ["sleep 600"]})
    long_id = long["Command"]["CommandId"]
    wait_for("both to run", 30, lambda: all(
        admin.get_command_invocation(CommandId=long_id, InstanceId=i)["ExecutionStartDateTime"] for i in ids
    ))
    admin.cancel_command(CommandId=long_id)
    wait_for("the cancel", 30, lambda: admin.list_commands(CommandId=long_id)["Commands"][0]["Status"] == "Cancelled")

    # SSM's errors.
    assert code_of(error_of(admin.get_command_invocation, CommandId="x" * 36, InstanceId=ids[0])) == "InvalidCommandId"
    assert code_of(error_of(admin.send_command, DocumentName=DOC, InstanceIds=["mi-00000000000000000"],
                            Parameters={"commands": ["id"]})) == "InvalidInstanceId"
    assert code_of(error_of(admin.send_command, DocumentName="AWS-Nope", InstanceIds=ids,
                            Parameters={"commands": ["id"]})) == "InvalidDocument"


def test_the_aws_cli_drives_all_five_operations(broker, unique):
    agents = agents_tagged(broker, unique)
    r = broker.aws(["ssm", "send-command", "--document-name", DOC,
                    "--targets", f"Key=tag:RcGroup,Values={unique}",
                    "--parameters", 'commands=["uptime","echo done"]',
                    "--timeout-seconds", "600", "--max-concurrency", "50%", "--max-errors", "0"])
    assert r.code == 0, r.stderr
    command_id = r.json["Command"]["CommandId"]

    def done():
        c = broker.aws(["ssm", "list-commands", "--command-id", command_id]).json["Commands"][0]
        return c if c["Status"] in ("Success", "Failed", "TimedOut", "Cancelled") else None

    assert wait_for("the command", 60, done)["Status"] == "Success"
    r = broker.aws(["ssm", "list-command-invocations", "--command-id", command_id, "--details"])
    assert r.code == 0, r.stderr
    assert len(r.json["CommandInvocations"]) == 2
    r = broker.aws(["ssm", "get-command-invocation", "--command-id", command_id,
                    "--instance-id", agents[0].instance_id])
    assert r.code == 0 and r.json["StandardOutputContent"].endswith("done\n"), r.stdout
    r = broker.aws(["ssm", "cancel-command", "--command-id", command_id])
    assert r.code == 0, r.stderr
    r = broker.aws(["ssm", "cancel-command", "--command-id", "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8c"])
    assert r.error_code() == "InvalidCommandId", r.stderr
