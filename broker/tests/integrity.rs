//! Integrity end to end: the audit log's hash chain shows edits and deletions made in the
//! database file behind the broker's back, and a broker killed mid-session closes the
//! session's recording when it starts again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::{wait_for, Broker, Proc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

fn admin(broker: &Broker, op: &str, body: Value) -> (u16, Value) {
    broker.raw_call(op, &body.to_string(), &broker.key_id, &broker.secret, SystemTime::now())
}

fn verify(broker: &Broker) -> Value {
    let (status, v) = admin(broker, "AirlockIAM.VerifyAuditLog", json!({}));
    assert_eq!(status, 200, "{v}");
    v
}

/// Runs one statement on the broker's database, as someone with access to the file could.
fn sql(db: &Path, statement: &'static str) -> u64 {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        let done = sqlx::query(statement).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        done.rows_affected()
    })
}

fn decision_of_third_event(db: &Path) -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        sqlx::query_scalar("SELECT decision FROM audit_events WHERE seq = 3")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    })
}

#[test]
fn audit_chain_reveals_edited_and_deleted_events() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let db = broker.data_dir().join("airlock.db");

    // Creating a user and its key are the first two events; its StartSession, with no policy,
    // is the third: an implicit deny.
    assert_eq!(admin(&broker, "AirlockIAM.CreateUser", json!({"UserName": "bob"})).0, 200);
    let (_, v) = admin(&broker, "AirlockIAM.CreateAccessKey", json!({"UserName": "bob"}));
    let (bob_id, bob_secret) = (
        v["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
        v["AccessKey"]["SecretAccessKey"].as_str().unwrap().to_owned(),
    );
    let bob = |op: &str, body: Value| {
        broker.raw_call(op, &body.to_string(), &bob_id, &bob_secret, SystemTime::now())
    };
    let (status, v) = bob("StartSession", json!({"Target": agent.instance_id}));
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDeniedException")), "{v}");
    // Verifying needs its own permission.
    let (status, v) = bob("AirlockIAM.VerifyAuditLog", json!({}));
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDenied")), "{v}");

    // The admin's StartSession is decided on the instance and the document, then terminated.
    let (status, v) = admin(&broker, "StartSession", json!({"Target": agent.instance_id}));
    assert_eq!(status, 200, "{v}");
    let id = v["SessionId"].as_str().unwrap().to_owned();
    let (status, v) = admin(&broker, "TerminateSession", json!({"SessionId": id}));
    assert_eq!(status, 200, "{v}");

    let v = verify(&broker);
    assert_eq!((v["Valid"].as_bool(), v["Events"].as_u64()), (Some(true), Some(6)), "{v}");
    assert!(v.get("FirstBrokenSeq").is_none(), "{v}");
    assert!(v["Message"].as_str().unwrap().contains("intact"), "{v}");
    assert_eq!(decision_of_third_event(&db), "implicitDeny");

    // Someone with the database file turns the denial into an approval.
    assert_eq!(sql(&db, "UPDATE audit_events SET decision = 'allowed' WHERE seq = 3"), 1);
    let v = verify(&broker);
    assert_eq!((v["Valid"].as_bool(), v["FirstBrokenSeq"].as_i64()), (Some(false), Some(3)), "{v}");
    assert_eq!(v["Events"], 6);
    assert!(v["Message"].as_str().unwrap().contains("event 3 was altered"), "{v}");

    // Putting it back restores the chain; deleting a middle event breaks it where the hole is.
    sql(&db, "UPDATE audit_events SET decision = 'implicitDeny' WHERE seq = 3");
    assert_eq!(verify(&broker)["Valid"], true);
    assert_eq!(sql(&db, "DELETE FROM audit_events WHERE seq = 5"), 1);
    let v = verify(&broker);
    assert_eq!((v["Valid"].as_bool(), v["FirstBrokenSeq"].as_i64()), (Some(false), Some(5)), "{v}");
    assert_eq!(v["Events"], 5);

    // New decisions keep being recorded, and do not mend the hole.
    let (status, _) = admin(&broker, "TerminateSession", json!({"SessionId": id}));
    assert_eq!(status, 200);
    let v = verify(&broker);
    assert_eq!(
        (v["Valid"].as_bool(), v["FirstBrokenSeq"].as_i64(), v["Events"].as_u64()),
        (Some(false), Some(5), Some(6))
    );
    let (_, v) = admin(&broker, "AirlockIAM.ListAuditEvents", json!({}));
    assert_eq!(v["Events"].as_array().unwrap().len(), 6);
}

#[test]
fn recording_survives_a_broker_killed_mid_session() {
    let broker = Broker::start();
    // A session that cannot resume after the restart (wire.md §2.4): its recording is closed.
    broker.set_preferences(json!({ "resumeWindowSeconds": 0 }));
    let agent = broker.agent("a");
    let (spool, recordings) = (broker.data_dir().join("spool"), broker.data_dir().join("recordings"));
    let cli = broker
        .command(&agent.instance_id, "echo crash-marker-$((6*7)); sleep 300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _cli = Proc(cli);
    let id = wait_for("the marker in a .cast.part", Duration::from_secs(30), || {
        std::fs::read_dir(&spool).unwrap().flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".cast.part")?;
            let text = std::fs::read_to_string(e.path()).ok()?;
            text.contains("crash-marker-42").then(|| id.to_owned())
        })
    });

    let Broker { dir, key_id, secret, mut proc, .. } = broker;
    let status = Command::new("kill").args(["-9", &proc.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = proc.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&exit), Some(9));
    assert!(spool.join(format!("{id}.cast.part")).exists(), "the kill left the recording unfinished");

    let mut broker = Broker::start_in(dir, &[]);
    // Keys are printed only on the first start.
    (broker.key_id, broker.secret) = (key_id, secret);
    let cast = recordings.join(format!("{id}.cast"));
    assert!(!spool.join(format!("{id}.cast.part")).exists());
    // Recovered, then delivered to the local folder and gone from the spool.
    let manifest_path = recordings.join(format!("{id}.manifest.json"));
    wait_for("the recovered recording delivered", Duration::from_secs(10), || {
        manifest_path.exists().then_some(())
    });
    wait_for("the spool emptied", Duration::from_secs(10), || {
        (std::fs::read_dir(&spool).unwrap().count() == 0).then_some(())
    });
    let bytes = std::fs::read(&cast).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("crash-marker-42"), "{text}");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    assert!(text.trim_end().ends_with("\"m\", \"session ended: BrokerCrashed\"]"), "{text}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(recordings.join(format!("{id}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["sha256"], hex::encode(Sha256::digest(&bytes)));
    assert_eq!(manifest["size"], bytes.len() as u64);
    assert_eq!(manifest["end_reason"], "BrokerCrashed");
    assert_eq!(manifest["exit_code"], Value::Null);
    assert_eq!(manifest["meta"]["target"], agent.instance_id.as_str());
    wait_for("the recovery in the broker's log", Duration::from_secs(10), || {
        let log = broker.log.lock().unwrap();
        (log.contains("recordings left unfinished by a previous run were closed")
            && log.contains("recovered"))
        .then_some(())
    });

    let history = broker.api(&["describe-sessions", "--state", "History"]);
    let s = history["Sessions"].as_array().unwrap().iter().find(|s| s["SessionId"] == id.as_str()).cloned();
    assert_eq!(s.expect("the session in History")["Status"], "Failed");
}
