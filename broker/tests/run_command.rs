//! Run Command end to end: the real broker and ten real agents on this machine, commands sent
//! through the signed API. Concurrency is measured on the agents (each invocation appends its
//! start and end to a file), not taken from the broker's own counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{wait_for, Agent, Broker};
use serde_json::{json, Value};

fn call(broker: &Broker, op: &str, body: Value) -> (u16, Value) {
    broker.raw_call(op, &body.to_string(), &broker.key_id, &broker.secret, SystemTime::now())
}

fn ok(broker: &Broker, op: &str, body: Value) -> Value {
    let (status, v) = call(broker, op, body);
    assert_eq!(status, 200, "{op}: {v}");
    v
}

fn tag(broker: &Broker, instance: &str, key: &str, value: &str) {
    ok(
        broker,
        "AddTagsToResource",
        json!({"ResourceType": "ManagedInstance", "ResourceId": instance, "Tags": [{"Key": key, "Value": value}]}),
    );
}

/// Sends a command and returns its id.
fn send(broker: &Broker, body: Value) -> String {
    let v = ok(broker, "SendCommand", body);
    v["Command"]["CommandId"].as_str().unwrap().to_owned()
}

/// Waits until the command is finished and returns it.
fn finished(broker: &Broker, id: &str, limit: Duration) -> Value {
    wait_for(&format!("command {id} to finish"), limit, || {
        let v = ok(broker, "ListCommands", json!({"CommandId": id}));
        let c = v["Commands"][0].clone();
        matches!(c["Status"].as_str(), Some("Success" | "Failed" | "TimedOut" | "Cancelled")).then_some(c)
    })
}

/// The command's invocations by instance.
fn invocations(broker: &Broker, id: &str) -> BTreeMap<String, Value> {
    let v = ok(broker, "ListCommandInvocations", json!({"CommandId": id, "Details": true}));
    v["CommandInvocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["InstanceId"].as_str().unwrap().to_owned(), i.clone()))
        .collect()
}

fn statuses(invs: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    invs.values()
        .map(|i| (i["Status"].as_str().unwrap().to_owned(), i["StatusDetails"].as_str().unwrap().to_owned()))
        .collect()
}

fn count(list: &[(String, String)], status: &str, details: &str) -> usize {
    list.iter().filter(|(s, d)| s == status && d == details).count()
}

/// The most intervals open at once.
fn max_overlap(spans: &[(u128, u128)]) -> usize {
    let mut edges: Vec<(u128, i32)> = spans.iter().flat_map(|(s, e)| [(*s, 1), (*e, -1)]).collect();
    // An end at the same instant as a start closes first.
    edges.sort();
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        max = max.max(open);
    }
    usize::try_from(max).unwrap()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn a_fleet_by_id_and_by_tag_with_rate_control_cancel_and_per_instance_authorization() {
    let broker = Broker::start();
    let agents: Vec<Agent> = (0..10).map(|n| broker.agent(&format!("a{n}"))).collect();
    let ids: Vec<String> = agents.iter().map(|a| a.instance_id.clone()).collect();
    for (n, id) in ids.iter().enumerate() {
        tag(&broker, id, "Environment", if n < 7 { "Production" } else { "Staging" });
    }
    let mut production: Vec<&String> = ids[..7].iter().collect();
    production.sort();
    let scratch = tempfile::tempdir().unwrap();

    // By id: output and exit codes come back.
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": [ids[0], ids[1]],
            "Parameters": {"commands": ["echo hello from $(hostname)", "echo oops >&2"]}}),
    );
    let c = finished(&broker, &id, Duration::from_secs(30));
    assert_eq!(
        (c["Status"].as_str(), c["TargetCount"].as_u64(), c["CompletedCount"].as_u64()),
        (Some("Success"), Some(2), Some(2)),
        "{c}"
    );
    let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[1]}));
    assert!(got["StandardOutputContent"].as_str().unwrap().starts_with("hello from "), "{got}");
    assert_eq!(got["StandardErrorContent"], "oops\n");
    assert_eq!(got["ResponseCode"], 0);
    assert_eq!(got["Status"], "Success");
    let (status, v) = call(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[5]}));
    assert_eq!((status, v["__type"].as_str()), (400, Some("InvocationDoesNotExist")), "{v}");

    // `uptime` on the ten at full concurrency: the wall time from send to done (a figure, not
    // an assertion).
    let started = std::time::Instant::now();
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "tag-key", "Values": ["Environment"]}],
            "MaxConcurrency": "100%", "Parameters": {"commands": ["uptime"]}}),
    );
    let c = finished(&broker, &id, Duration::from_secs(30));
    assert_eq!((c["Status"].as_str(), c["CompletedCount"].as_u64()), (Some("Success"), Some(10)), "{c}");
    println!("uptime on 10 agents: {:?} from SendCommand to Success (50 ms polling)", started.elapsed());

    // By tag with MaxConcurrency 3: the agents' own clocks show at most 3 running at once.
    let spans_file = scratch.path().join("spans");
    let script =
        format!("s=$(date +%s%N); sleep 0.7; e=$(date +%s%N); echo \"$s $e\" >> {}", spans_file.display());
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript",
            "Targets": [{"Key": "tag:Environment", "Values": ["Production"]}],
            "MaxConcurrency": "3", "Parameters": {"commands": [script]}}),
    );
    let c = finished(&broker, &id, Duration::from_secs(60));
    assert_eq!((c["Status"].as_str(), c["TargetCount"].as_u64()), (Some("Success"), Some(7)), "{c}");
    let invs = invocations(&broker, &id);
    assert_eq!(invs.keys().collect::<Vec<_>>(), production);
    let spans: Vec<(u128, u128)> = std::fs::read_to_string(&spans_file)
        .unwrap()
        .lines()
        .map(|l| {
            let (s, e) = l.split_once(' ').unwrap();
            (s.parse().unwrap(), e.parse().unwrap())
        })
        .collect();
    assert_eq!(spans.len(), 7);
    let overlap = max_overlap(&spans);
    println!("MaxConcurrency 3: at most {overlap} invocations ran at once on the agents");
    assert!((1..=3).contains(&overlap), "{overlap} ran at once: {spans:?}");

    // MaxErrors 1 (one at a time): the second failure stops the rest.
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript",
            "Targets": [{"Key": "tag:Environment", "Values": ["Production"]}],
            "MaxConcurrency": "1", "MaxErrors": "1", "Parameters": {"commands": ["exit 3"]}}),
    );
    let c = finished(&broker, &id, Duration::from_secs(60));
    let list = statuses(&invocations(&broker, &id));
    assert_eq!(count(&list, "Failed", "Failed"), 2, "{list:?}");
    assert_eq!(count(&list, "Cancelled", "Terminated"), 5, "{list:?}");
    assert_eq!((c["Status"].as_str(), c["ErrorCount"].as_u64()), (Some("Failed"), Some(2)), "{c}");

    // Output over 24,000 characters is cut inline.
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": [ids[2]],
            "Parameters": {"commands": ["head -c 30000 /dev/zero | tr '\\0' x", "head -c 9000 /dev/zero | tr '\\0' y >&2"]}}),
    );
    finished(&broker, &id, Duration::from_secs(30));
    let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[2]}));
    let out = got["StandardOutputContent"].as_str().unwrap();
    assert_eq!((out.len(), out.chars().all(|c| c == 'x')), (24_000, true), "{}", &out[..out.len().min(80)]);
    assert_eq!(got["StandardErrorContent"].as_str().unwrap().len(), 8_000);

    // Cancel kills a `sleep 600` on every host.
    let pids_file = scratch.path().join("pids");
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "tag-key", "Values": ["Environment"]}],
            "Parameters": {"commands": [format!("echo $$ >> {}; exec sleep 600", pids_file.display())]}}),
    );
    let pids: Vec<i32> = wait_for("ten sleeps to start", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&pids_file).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() == 10).then_some(pids)
    });
    assert!(pids.iter().all(|p| alive(*p)));
    ok(&broker, "CancelCommand", json!({"CommandId": id}));
    let c = finished(&broker, &id, Duration::from_secs(30));
    assert_eq!(c["Status"], "Cancelled", "{c}");
    let list = statuses(&invocations(&broker, &id));
    assert_eq!(count(&list, "Cancelled", "Cancelled"), 10, "{list:?}");
    wait_for("the sleeps to be gone", Duration::from_secs(10), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });

    // A principal denied the Staging instances by a tag condition: those fail alone.
    broker.api(&["iam", "create-user", "--user-name", "operator"]);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ssm:SendCommand", "ssm:ListCommands", "ssm:ListCommandInvocations",
            "ssm:GetCommandInvocation"], "Resource": "*"},
        {"Effect": "Deny", "Action": "ssm:SendCommand", "Resource": "*",
            "Condition": {"StringEquals": {"ssm:resourceTag/Environment": "Staging"}}}]});
    broker.api(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "operator",
        "--policy-name",
        "p",
        "--policy-document",
        &policy.to_string(),
    ]);
    let key = broker.api(&["iam", "create-access-key", "--user-name", "operator"]);
    let (kid, secret) = (
        key["AccessKey"]["AccessKeyId"].as_str().unwrap(),
        key["AccessKey"]["SecretAccessKey"].as_str().unwrap(),
    );
    let body = json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "tag-key", "Values": ["Environment"]}],
        "Parameters": {"commands": ["true"]}});
    let (status, v) = broker.raw_call("SendCommand", &body.to_string(), kid, secret, SystemTime::now());
    assert_eq!(status, 200, "{v}");
    let id = v["Command"]["CommandId"].as_str().unwrap().to_owned();
    let c = finished(&broker, &id, Duration::from_secs(30));
    let invs = invocations(&broker, &id);
    for (n, instance) in ids.iter().enumerate() {
        let i = &invs[instance];
        if n < 7 {
            assert_eq!(i["Status"], "Success", "{i}");
        } else {
            assert_eq!(
                (i["Status"].as_str(), i["StatusDetails"].as_str()),
                (Some("Failed"), Some("AccessDenied")),
                "{i}"
            );
            let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": instance}));
            assert!(
                got["StandardErrorContent"]
                    .as_str()
                    .unwrap()
                    .contains("not authorized to perform: ssm:SendCommand"),
                "{got}"
            );
        }
    }
    assert_eq!(c["TargetCount"], 10);
    // The decisions are in the audit log, one per instance.
    let audit = broker.api(&["iam", "list-audit-events"]);
    let denied = audit.to_string().matches("explicitDeny").count();
    assert!(denied >= 3, "{audit}");
    drop(agents);
}

#[test]
fn offline_agents_get_the_command_when_they_reconnect_or_time_out() {
    let broker = Broker::start();
    let mut agents: Vec<Agent> = (0..3).map(|n| broker.agent(&format!("b{n}"))).collect();
    let ids: Vec<String> = agents.iter().map(|a| a.instance_id.clone()).collect();
    // Two agents stop (SIGTERM: their links close at once).
    for a in &mut agents[..2] {
        let pid = a.proc.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        a.proc.0.wait().unwrap();
    }
    for id in &ids[..2] {
        // The agent ends its control stream before it closes, so the broker learns at once; the
        // deadline still covers QUIC's 30 s idle timeout. (With only the CONNECTION_CLOSE, an
        // agent stopped right after connecting stayed online past 20 s in about 1 run in 10.)
        wait_for("the agent to be offline", Duration::from_secs(45), || {
            let v = ok(&broker, "GetConnectionStatus", json!({"Target": id}));
            (v["Status"] == "notconnected").then_some(())
        });
    }
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ids, "TimeoutSeconds": 30,
            "Parameters": {"commands": ["echo ran"]}}),
    );
    let invs = wait_for("the online agent's result", Duration::from_secs(20), || {
        let invs = invocations(&broker, &id);
        (invs[&ids[2]]["Status"] == "Success").then_some(invs)
    });
    assert_eq!(invs[&ids[0]]["Status"], "Delayed", "{:?}", invs[&ids[0]]);
    // The first comes back within the delivery timeout and runs it.
    let dir = agents[0].dir.clone();
    agents[0] = Agent::run(&dir, ids[0].clone());
    let c = finished(&broker, &id, Duration::from_secs(60));
    let invs = invocations(&broker, &id);
    assert_eq!(invs[&ids[0]]["Status"], "Success", "{:?}", invs[&ids[0]]);
    let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[0]}));
    assert_eq!(got["StandardOutputContent"], "ran\n");
    // The second never did.
    assert_eq!(
        (invs[&ids[1]]["Status"].as_str(), invs[&ids[1]]["StatusDetails"].as_str()),
        (Some("TimedOut"), Some("DeliveryTimedOut"))
    );
    assert_eq!(
        (c["Status"].as_str(), c["DeliveryTimedOutCount"].as_u64()),
        (Some("TimedOut"), Some(1)),
        "{c}"
    );

    // An agent that stops while a command runs reports it once it is back: interrupted.
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": [ids[2]], "Parameters": {"commands": ["sleep 600"]}}),
    );
    wait_for("the sleep to start", Duration::from_secs(20), || {
        let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[2]}));
        (got["ExecutionStartDateTime"] != "").then_some(())
    });
    let pid = agents[2].proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    agents[2].proc.0.wait().unwrap();
    let dir = agents[2].dir.clone();
    agents[2] = Agent::run(&dir, ids[2].clone());
    finished(&broker, &id, Duration::from_secs(30));
    let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[2]}));
    assert_eq!(got["Status"], "Failed", "{got}");
    assert!(got["StandardErrorContent"].as_str().unwrap().contains("restarted"), "{got}");
    // Reported once: the agent's outbox is empty once the broker acknowledged it.
    wait_for("the agent's outbox to empty", Duration::from_secs(10), || {
        let left = std::fs::read_dir(dir.join("commands")).unwrap().count();
        (left == 0).then_some(())
    });
}

#[test]
fn bad_requests_get_ssm_errors() {
    let broker = Broker::start();
    let cases = [
        (
            json!({"DocumentName": "AWS-Nope", "InstanceIds": ["mi-0123456789abcdef0"], "Parameters": {"commands": ["id"]}}),
            "InvalidDocument",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ["mi-0123456789abcdef0"], "Parameters": {}}),
            "InvalidParameters",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ["mi-0123456789abcdef0"], "Parameters": {"commands": ["id"]}}),
            "InvalidInstanceId",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ["i-1"], "Parameters": {"commands": ["id"]}}),
            "InvalidInstanceId",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ["mi-0123456789abcdef0", "mi-0123456789abcdef0"], "Parameters": {"commands": ["id"]}}),
            "DuplicateInstanceId",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "Parameters": {"commands": ["id"]}}),
            "InvalidParameters",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "color", "Values": ["x"]}], "Parameters": {"commands": ["id"]}}),
            "InvalidParameters",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "tag-key", "Values": ["x"]}], "MaxConcurrency": "0", "Parameters": {"commands": ["id"]}}),
            "ValidationException",
        ),
        (
            json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "tag-key", "Values": ["x"]}], "TimeoutSeconds": 5, "Parameters": {"commands": ["id"]}}),
            "ValidationException",
        ),
    ];
    for (body, code) in cases {
        let (status, v) = call(&broker, "SendCommand", body.clone());
        assert_eq!((status, v["__type"].as_str()), (400, Some(code)), "{body}: {v}");
    }
    let (_, v) = call(
        &broker,
        "GetCommandInvocation",
        json!({"CommandId": "nope", "InstanceId": "mi-0123456789abcdef0"}),
    );
    assert_eq!(v["__type"], "InvalidCommandId");
    let (_, v) = call(&broker, "CancelCommand", json!({"CommandId": "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8c"}));
    assert_eq!(v["__type"], "InvalidCommandId");
    for op in ["ListCommands", "ListCommandInvocations"] {
        let (_, v) = call(&broker, op, json!({"CommandId": "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8c"}));
        assert_eq!(v["__type"], "InvalidCommandId", "{op}");
    }
    // No instance has the tag: the command fails at once with SSM's detail.
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "Targets": [{"Key": "tag:Role", "Values": ["none"]}],
            "Parameters": {"commands": ["id"]}}),
    );
    let c = finished(&broker, &id, Duration::from_secs(10));
    assert_eq!(
        (c["Status"].as_str(), c["StatusDetails"].as_str(), c["TargetCount"].as_u64()),
        (Some("Failed"), Some("NoInstancesInTag"), Some(0))
    );
}

#[test]
fn the_cli_sends_waits_lists_and_fails_when_an_invocation_fails() {
    let broker = Broker::start();
    let agents: Vec<Agent> = (0..2).map(|n| broker.agent(&format!("c{n}"))).collect();
    for a in &agents {
        tag(&broker, &a.instance_id, "Role", "web");
    }
    let out = broker
        .cli()
        .args([
            "send-command",
            "--document-name",
            "AWS-RunShellScript",
            "--targets",
            "Key=tag:Role,Values=web",
        ])
        .args(["--parameters", r#"{"commands":["echo up"]}"#, "--max-concurrency", "50%", "--wait"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for a in &agents {
        assert!(text.contains(&format!("{}  done     Success  exit 0", a.instance_id)), "{text}");
    }
    assert!(text.contains("Success: 2 targets, 2 completed, 0 errors"), "{text}");
    let command_id = text.lines().next().unwrap().strip_prefix("CommandId ").unwrap().to_owned();
    let v = broker.api(&["list-command-invocations", "--command-id", &command_id, "--details"]);
    assert_eq!(v["CommandInvocations"][0]["CommandPlugins"][0]["Output"], "up\n", "{v}");
    let v = broker.api(&[
        "get-command-invocation",
        "--command-id",
        &command_id,
        "--instance-id",
        &agents[0].instance_id,
    ]);
    assert_eq!(v["StandardOutputContent"], "up\n");
    let v = broker.api(&["list-commands"]);
    assert_eq!(v["Commands"][0]["CommandId"], command_id.as_str());

    // A custom Command document with parameters.
    let content = json!({"schemaVersion": "2.2", "description": "greet",
        "parameters": {"who": {"type": "String", "allowedPattern": "^[a-z]+$"},
            "greeting": {"type": "String", "default": "hello", "allowedValues": ["hello", "bye"]}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "greet",
            "inputs": {"runCommand": ["echo {{ greeting }} {{ who }}"]}}]});
    ok(
        &broker,
        "CreateDocument",
        json!({"Name": "Greet", "DocumentType": "Command", "Content": content.to_string()}),
    );
    let d = ok(&broker, "DescribeDocument", json!({"Name": "Greet"}));
    assert_eq!(
        (d["Document"]["DocumentType"].as_str(), d["Document"]["SchemaVersion"].as_str()),
        (Some("Command"), Some("2.2")),
        "{d}"
    );
    assert_eq!(d["Document"]["Parameters"][0]["Name"], "greeting", "{d}");
    assert_eq!(d["Document"]["Parameters"][0]["DefaultValue"], "hello", "{d}");
    let id = send(
        &broker,
        json!({"DocumentName": "Greet", "InstanceIds": [agents[1].instance_id], "Parameters": {"who": ["world"]}}),
    );
    finished(&broker, &id, Duration::from_secs(30));
    let got =
        ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": agents[1].instance_id}));
    assert_eq!(
        (got["StandardOutputContent"].as_str(), got["DocumentVersion"].as_str()),
        (Some("hello world\n"), Some("1"))
    );
    for bad in [json!({"who": ["world; reboot"]}), json!({"who": ["x"], "greeting": ["hi"]}), json!({})] {
        let (status, v) = call(
            &broker,
            "SendCommand",
            json!({"DocumentName": "Greet", "InstanceIds": [agents[1].instance_id], "Parameters": bad}),
        );
        assert_eq!((status, v["__type"].as_str()), (400, Some("InvalidParameters")), "{v}");
    }
    let bad_doc = json!({"schemaVersion": "2.2", "parameters": {"p": {"type": "String", "allowedPattern": "(["}},
        "mainSteps": [{"action": "aws:runShellScript", "name": "x", "inputs": {"runCommand": ["{{ p }}"]}}]});
    let (status, v) = call(
        &broker,
        "CreateDocument",
        json!({"Name": "Bad", "DocumentType": "Command", "Content": bad_doc.to_string()}),
    );
    assert_eq!((status, v["__type"].as_str()), (400, Some("InvalidDocumentContent")), "{v}");

    // One target fails: --wait says so and exits non-zero.
    let out = broker
        .cli()
        .args([
            "send-command",
            "--document-name",
            "AWS-RunShellScript",
            "--instance-ids",
            &agents[0].instance_id,
        ])
        .args(["--parameters", r#"{"commands":["exit 7"]}"#, "--wait"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("done     Failed  exit 7"), "{text}");
}

#[test]
fn a_broker_restart_loses_no_invocation() {
    let broker = Broker::start();
    let mut agents: Vec<Agent> = (0..2).map(|n| broker.agent(&format!("r{n}"))).collect();
    let ids: Vec<String> = agents.iter().map(|a| a.instance_id.clone()).collect();
    // The second agent is offline when the command is sent.
    let pid = agents[1].proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    agents[1].proc.0.wait().unwrap();
    // The agent ends its control stream before it closes, so the broker learns at once; the
    // deadline still covers QUIC's 30 s idle timeout. (With only the CONNECTION_CLOSE, an
    // agent stopped right after connecting stayed online past 20 s in about 1 run in 10.)
    wait_for("the agent to be offline", Duration::from_secs(45), || {
        let v = ok(&broker, "GetConnectionStatus", json!({"Target": ids[1]}));
        (v["Status"] == "notconnected").then_some(())
    });
    let id = send(
        &broker,
        json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": ids, "TimeoutSeconds": 300,
            "Parameters": {"commands": ["sleep 2", "echo survived"]}}),
    );
    wait_for("the first invocation to start", Duration::from_secs(20), || {
        let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": ids[0]}));
        (got["ExecutionStartDateTime"] != "").then_some(())
    });
    // The broker dies while it runs and comes back on the same port.
    let port = broker.url.rsplit(':').next().unwrap().to_owned();
    let Broker { dir, proc, key_id, secret, .. } = broker;
    drop(proc);
    let mut broker = Broker::start_in(dir, &["--listen", &format!("127.0.0.1:{port}")]);
    (broker.key_id, broker.secret) = (key_id, secret);
    // The first agent's result comes through its reconnect; the second agent, started now,
    // gets the command from the resumed scheduler.
    let dir = agents[1].dir.clone();
    agents[1] = Agent::run(&dir, ids[1].clone());
    let c = finished(&broker, &id, Duration::from_secs(60));
    assert_eq!(c["Status"], "Success", "{c}");
    for instance in &ids {
        let got = ok(&broker, "GetCommandInvocation", json!({"CommandId": id, "InstanceId": instance}));
        assert_eq!(got["StandardOutputContent"], "survived\n", "{got}");
    }
    for a in &agents {
        wait_for("the outbox to empty", Duration::from_secs(10), || {
            (std::fs::read_dir(a.dir.join("commands")).unwrap().count() == 0).then_some(())
        });
    }
}
