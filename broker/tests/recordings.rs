//! Recordings end to end: sessions recorded by the broker, then listed, printed, searched,
//! exported and replayed with the `airlock recordings` commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{pty_cli, wait_for, Broker, Terminal};
use serde_json::{json, Value};

fn recordings_dir(broker: &Broker) -> std::path::PathBuf {
    broker.data_dir().join("recordings")
}

/// Waits until the session's recording is finished (cast and manifest in place).
fn wait_recorded(broker: &Broker, id: &str) {
    let dir = recordings_dir(broker);
    wait_for(&format!("the recording of {id}"), Duration::from_secs(20), || {
        (dir.join(format!("{id}.cast")).exists() && dir.join(format!("{id}.manifest.json")).exists())
            .then_some(())
    });
}

fn history_ids(broker: &Broker) -> Vec<String> {
    broker.api(&["describe-sessions", "--state", "History"])["Sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SessionId"].as_str().unwrap().to_owned())
        .collect()
}

fn cli_out(broker: &Broker, args: &[&str]) -> std::process::Output {
    broker.cli().args(args).output().unwrap()
}

fn ok_stdout(broker: &Broker, args: &[&str]) -> String {
    let out = cli_out(broker, args);
    assert!(out.status.success(), "airlock {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn recordings_are_listed_printed_searched_exported_and_replayed() {
    let broker = Broker::start();
    let agent = broker.agent("a");

    // A command printing a coloured marker.
    let out =
        broker.command(&agent.instance_id, r"printf '\033[31mred-%s\033[0m\n' $((40+2))").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("red-42"));
    let command_id = history_ids(&broker).pop().expect("the command session in history");
    wait_recorded(&broker, &command_id);

    // A person's shell, typing a word nobody else prints.
    let mut term = Terminal::spawn(pty_cli(&broker, &["start-session", "--target", &agent.instance_id]));
    term.expect("Starting session with SessionId");
    term.send("echo zebra-quokka-$((3*3))\r");
    term.expect("zebra-quokka-9");
    term.send("exit\r");
    assert_eq!(term.wait(), 0);
    let shell_id =
        history_ids(&broker).into_iter().find(|id| *id != command_id).expect("the shell session in history");
    wait_recorded(&broker, &shell_id);

    // list: both, with their manifests' facts.
    let listed = broker.api(&["recordings", "list"]);
    let recs = listed["Recordings"].as_array().unwrap();
    for id in [&command_id, &shell_id] {
        let r =
            recs.iter().find(|r| r["SessionId"] == id.as_str()).unwrap_or_else(|| panic!("{id}: {listed}"));
        assert_eq!(r["Target"], agent.instance_id.as_str());
        assert_eq!(r["EndReason"], "Exited");
        let cast = std::fs::read(recordings_dir(&broker).join(format!("{id}.cast"))).unwrap();
        assert_eq!(r["Size"], cast.len() as u64);
        assert!(r["Events"].as_u64().unwrap() > 0 && r["StartDate"].as_u64().unwrap() > 1_600_000_000);
    }
    assert_eq!(recs[0]["SessionId"], shell_id.as_str(), "newest first");
    let page = broker.api(&["recordings", "list", "--max-results", "1"]);
    assert_eq!(page["Recordings"].as_array().unwrap().len(), 1);
    let token = page["NextToken"].as_str().expect("a second page");
    let page2 = broker.api(&["recordings", "list", "--max-results", "1", "--next-token", token]);
    assert_eq!(page2["Recordings"][0]["SessionId"], command_id.as_str());

    // cat: the text without escape bytes.
    let text = ok_stdout(&broker, &["recordings", "cat", &command_id]);
    assert!(text.contains("red-42\n"), "{text:?}");
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");

    // search: the session, a time offset and the line.
    let found = ok_stdout(&broker, &["recordings", "search", "red-42"]);
    let line = found.lines().find(|l| l.starts_with(&command_id)).unwrap_or_else(|| panic!("{found:?}"));
    let fields: Vec<&str> = line.split("  ").collect();
    assert_eq!(fields.len(), 3, "{line:?}");
    let t = fields[1];
    assert!(t.starts_with('+') && t.len() == 10 && &t[3..4] == ":" && &t[6..7] == ".", "{line:?}");
    assert_eq!(fields[2], "red-42");
    assert!(!found.contains(&shell_id), "{found:?}");
    let typed = ok_stdout(&broker, &["recordings", "search", "zebra-quokka-", "--max-results", "1"]);
    assert_eq!(typed.lines().count(), 1, "{typed:?}");
    assert!(typed.starts_with(&shell_id), "{typed:?}");
    assert_eq!(ok_stdout(&broker, &["recordings", "search", "RED-42"]), "", "case-sensitive");

    // export: the exact bytes, to -o FILE and to the default name.
    let original = std::fs::read(recordings_dir(&broker).join(format!("{command_id}.cast"))).unwrap();
    let file = broker.dir.path().join("exported.cast");
    ok_stdout(&broker, &["recordings", "export", &command_id, "-o", file.to_str().unwrap()]);
    assert_eq!(std::fs::read(&file).unwrap(), original);
    let cwd = broker.dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = broker.cli().current_dir(&cwd).args(["recordings", "export", &shell_id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shell_cast = std::fs::read(recordings_dir(&broker).join(format!("{shell_id}.cast"))).unwrap();
    assert_eq!(std::fs::read(cwd.join(format!("{shell_id}.cast"))).unwrap(), shell_cast);
    // The real asciinema reads the export (input, resize and marker events included).
    let asciinema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/asciinema");
    assert!(asciinema.exists(), "{} is missing: run scripts/venv.sh", asciinema.display());
    let out = std::process::Command::new(&asciinema)
        .arg("cat")
        .arg(cwd.join(format!("{shell_id}.cast")))
        .output()
        .unwrap();
    assert!(out.status.success(), "asciinema cat: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("zebra-quokka-9"));

    // play: fast, and what was typed is on the replayed screen.
    let started = Instant::now();
    let played = ok_stdout(&broker, &["recordings", "play", &shell_id, "--speed", "100"]);
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(played.contains("zebra-quokka-9"), "{played:?}");

    // Path tricks and unknown ids are clean errors, from the CLI and from the API.
    for args in [["recordings", "cat", "../x"], ["recordings", "export", "../x"]] {
        let out = cli_out(&broker, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("session id") && !stderr.contains("panicked"), "{stderr}");
    }
    assert!(!broker.dir.path().join("x.cast").exists());
    for (id, code) in
        [("../x", "ValidationException"), ("..", "ValidationException"), ("", "ValidationException")]
    {
        let body = json!({"SessionId": id}).to_string();
        let (status, v) = broker.raw_call(
            "AirlockRecordings.GetRecording",
            &body,
            &broker.key_id,
            &broker.secret,
            SystemTime::now(),
        );
        assert_eq!((status, v["__type"].as_str()), (400, Some(code)), "{id:?}: {v}");
    }
    let out = cli_out(&broker, &["recordings", "cat", "admin-00000000000000000"]);
    assert_eq!(out.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(DoesNotExistException)"));
    let (status, v) = broker.raw_call(
        "AirlockRecordings.GetRecording",
        &json!({"SessionId": command_id, "Offset": original.len() + 1}).to_string(),
        &broker.key_id,
        &broker.secret,
        SystemTime::now(),
    );
    assert_eq!((status, v["__type"].as_str()), (400, Some("ValidationException")), "{v}");
}

/// Creates a user with an inline policy and a key; returns (key id, secret).
fn user(broker: &Broker, name: &str, policy: Value) -> (String, String) {
    let call = |op: &str, body: Value| {
        broker.raw_call(op, &body.to_string(), &broker.key_id, &broker.secret, SystemTime::now())
    };
    assert_eq!(call("AirlockIAM.CreateUser", json!({"UserName": name})).0, 200);
    let doc = policy.to_string();
    let (s, v) =
        call("AirlockIAM.PutUserPolicy", json!({"UserName": name, "PolicyName": "p", "PolicyDocument": doc}));
    assert_eq!(s, 200, "{v}");
    let (_, v) = call("AirlockIAM.CreateAccessKey", json!({"UserName": name}));
    (
        v["AccessKey"]["AccessKeyId"].as_str().unwrap().into(),
        v["AccessKey"]["SecretAccessKey"].as_str().unwrap().into(),
    )
}

#[test]
fn recordings_are_authorized_per_session() {
    let broker = Broker::start();
    // Two finished recordings put in place by hand: no agent needed to test the policy.
    let dir = recordings_dir(&broker);
    for id in ["admin-00000000000000001", "bob-00000000000000002"] {
        let cast = format!(
            "{{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1}}\n[0.5, \"o\", \"secret-{id}\\r\\n\"]\n"
        );
        std::fs::write(dir.join(format!("{id}.cast")), &cast).unwrap();
        let manifest = json!({
            "meta": {"session_id": id, "target": "mi-0123456789abcdef0", "owner": "o", "document": "d",
                     "width": 80, "height": 24, "term": "xterm"},
            "started_unix_us": 1_700_000_000_000_000u64, "ended_unix_us": 1_700_000_001_000_000u64,
            "duration_us": 1_000_000, "exit_code": 0, "end_reason": "Exited",
            "size": cast.len(), "sha256": "0".repeat(64), "events": 1
        });
        std::fs::write(dir.join(format!("{id}.manifest.json")), manifest.to_string()).unwrap();
    }
    let (key, secret) = user(
        &broker,
        "bob",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["airlock:ListRecordings", "airlock:SearchRecordings"], "Resource": "*"},
            {"Effect": "Allow", "Action": "airlock:GetRecording",
             "Resource": "arn:airlock:ssm:*:*:session/${aws:username}-*"}
        ]}),
    );
    let call = |op: &str, body: Value| {
        broker.raw_call(
            &format!("AirlockRecordings.{op}"),
            &body.to_string(),
            &key,
            &secret,
            SystemTime::now(),
        )
    };
    let (s, v) = call("ListRecordings", json!({}));
    assert_eq!((s, v["Recordings"].as_array().map(Vec::len)), (200, Some(2)), "{v}");
    let (s, v) = call("GetRecording", json!({"SessionId": "admin-00000000000000001"}));
    assert_eq!((s, v["__type"].as_str()), (400, Some("AccessDeniedException")), "{v}");
    let (s, v) = call("GetRecording", json!({"SessionId": "bob-00000000000000002"}));
    assert_eq!(s, 200, "{v}");
    // Search only looks into what the caller may read.
    let (s, v) = call("SearchRecordings", json!({"Pattern": "secret-"}));
    assert_eq!(s, 200, "{v}");
    let matches = v["Matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{v}");
    assert_eq!(matches[0]["SessionId"], "bob-00000000000000002");
    assert_eq!(matches[0]["TimeMicros"], 500_000);
    assert_eq!(matches[0]["Line"], "secret-bob-00000000000000002");
    // The admin sees both; a corrupt manifest is skipped, not an error.
    std::fs::write(dir.join("admin-00000000000000003.manifest.json"), b"{broken").unwrap();
    let v = broker.api(&["recordings", "list"]);
    assert_eq!(v["Recordings"].as_array().unwrap().len(), 2, "{v}");
    let found = String::from_utf8(cli_out(&broker, &["recordings", "search", "secret-"]).stdout).unwrap();
    assert_eq!(found.lines().count(), 2, "{found:?}");
    // Bad input is refused before any file is read.
    for body in [json!({"Pattern": ""}), json!({"Pattern": "x", "MaxResults": 1001}), json!({})] {
        let (s, v) = broker.raw_call(
            "AirlockRecordings.SearchRecordings",
            &body.to_string(),
            &broker.key_id,
            &broker.secret,
            SystemTime::now(),
        );
        assert_eq!(s, 400, "{body}: {v}");
    }
}
