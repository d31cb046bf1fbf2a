//! Recordings shipped to S3 and CloudWatch Logs: a real moto server stands in for both, the
//! real broker uses the real AWS SDK against it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airlock_recordings::aws::AwsClients;
use airlock_recordings::testing::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use common::{wait_for, Broker, Proc};
use serde_json::{json, Value};

const BUCKET: &str = "airlock-recordings";
const GROUP: &str = "/airlock/sessions";

/// moto plus SDK clients to look into it.
struct Cloud {
    moto: Moto,
    rt: tokio::runtime::Runtime,
    aws: AwsClients,
}

impl Cloud {
    fn start() -> Cloud {
        let moto = Moto::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let aws = rt.block_on(moto.clients());
        rt.block_on(aws.s3.create_bucket().bucket(BUCKET).send()).unwrap();
        Cloud { moto, rt, aws }
    }

    fn env(&self) -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", REGION),
        ]
    }

    fn broker_in(&self, dir: tempfile::TempDir) -> Broker {
        Broker::start_in_env(dir, &["--aws-endpoint-url", &self.moto.url], &self.env())
    }

    fn object(&self, key: &str) -> Option<Vec<u8>> {
        let got = self.rt.block_on(self.aws.s3.get_object().bucket(BUCKET).key(key).send()).ok()?;
        Some(self.rt.block_on(got.body.collect()).ok()?.into_bytes().to_vec())
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let listed =
            self.rt.block_on(self.aws.s3.list_objects_v2().bucket(BUCKET).prefix(prefix).send()).unwrap();
        listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
    }

    /// The live objects of a recording, concatenated in name order.
    fn live_bytes(&self, cast_key: &str) -> Vec<u8> {
        let mut keys = self.keys(&format!("{cast_key}.live/"));
        keys.sort();
        keys.iter().flat_map(|k| self.object(k).unwrap_or_default()).collect()
    }

    /// The messages of a log stream, oldest first; empty when it does not exist (yet).
    fn log_messages(&self, stream: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .aws
                .logs
                .get_log_events()
                .log_group_name(GROUP)
                .log_stream_name(stream)
                .start_from_head(true)
                .set_next_token(token.clone());
            let Ok(page) = self.rt.block_on(req.send()) else { return out };
            let before = out.len();
            out.extend(page.events().iter().filter_map(|e| e.message().map(str::to_owned)));
            let next = page.next_forward_token().map(str::to_owned);
            if out.len() == before || next == token {
                return out;
            }
            token = next;
        }
    }

    fn sse(&self, key: &str) -> String {
        let head = self.rt.block_on(self.aws.s3.head_object().bucket(BUCKET).key(key).send()).unwrap();
        head.server_side_encryption().map(|s| s.as_str().to_owned()).unwrap_or_default()
    }
}

/// The id of the one running recording in the spool whose text contains `needle`.
fn spooled_session(spool: &Path, needle: &str) -> String {
    wait_for(&format!("{needle} in a spooled recording"), Duration::from_secs(30), || {
        std::fs::read_dir(spool).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".cast.part")?;
            std::fs::read_to_string(e.path()).ok()?.contains(needle).then(|| id.to_owned())
        })
    })
}

/// Waits until every sink confirmed the recording: it is gone from the spool.
fn wait_delivered(broker: &Broker, id: &str, limit: Duration) -> (PathBuf, Vec<u8>) {
    let spool = broker.data_dir().join("spool");
    wait_for("the recording to leave the spool", limit, || {
        let left = std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&format!("{id}."))));
        (!left).then_some(())
    });
    let cast = broker.data_dir().join("recordings").join(format!("{id}.cast"));
    let bytes = std::fs::read(&cast).unwrap();
    (cast, bytes)
}

/// Lines of a child's stdout as they come, with the time each arrived.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<(Instant, String)>, needle: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) if line.contains(needle) => return at,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} from the session: {e}"),
        }
    }
}

fn cloud_prefs(encryption: bool) -> Value {
    json!({
        "s3BucketName": BUCKET,
        "s3KeyPrefix": "sessions/",
        "s3EncryptionEnabled": encryption,
        "cloudWatchLogGroupName": GROUP,
        "cloudWatchStreamingEnabled": true,
    })
}

/// The stream's messages joined as lines must be the recording itself.
fn assert_stream_is_recording(cloud: &Cloud, id: &str, bytes: &[u8]) {
    let lines = bytes.split(|b| *b == b'\n').count() - 1;
    let messages = wait_for("the whole recording in CloudWatch", Duration::from_secs(30), || {
        let m = cloud.log_messages(id);
        (m.len() >= lines).then_some(m)
    });
    let joined = messages.join("\n") + "\n";
    assert_eq!(joined, String::from_utf8_lossy(bytes), "the log stream differs from the recording");
}

#[test]
fn a_session_streams_to_s3_and_cloudwatch_and_ends_byte_identical() {
    let cloud = Cloud::start();
    let broker = cloud.broker_in(tempfile::tempdir().unwrap());
    broker.set_preferences(cloud_prefs(true));
    let agent = broker.agent("a");
    let script = r"echo live-marker-$((6*7)); sleep 6; printf '\033[31mred\033[0m\n'; echo end-marker";
    let mut child = broker.command(&agent.instance_id, script).stdout(Stdio::piped()).spawn().unwrap();
    let rx = lines_of(&mut child);
    let _cli = Proc(child);
    let shown = wait_line(&rx, "live-marker-42");
    let id = spooled_session(&broker.data_dir().join("spool"), "live-marker-42");
    let key = format!("sessions/{id}.cast");

    // While the session still runs, its output is in S3 and in CloudWatch within 5 s.
    wait_for("the output in S3", Duration::from_secs(5), || {
        String::from_utf8_lossy(&cloud.live_bytes(&key)).contains("live-marker-42").then_some(())
    });
    let s3_after = shown.elapsed();
    wait_for("the output in CloudWatch", Duration::from_secs(5), || {
        cloud.log_messages(&id).iter().any(|m| m.contains("live-marker-42")).then_some(())
    });
    println!(
        "output durable in S3 {s3_after:?} and in CloudWatch {:?} after the client saw it",
        shown.elapsed()
    );
    assert!(cloud.object(&key).is_none(), "the final object exists only once the session ended");

    wait_line(&rx, "end-marker");
    let (_, bytes) = wait_delivered(&broker, &id, Duration::from_secs(60));
    assert_eq!(cloud.object(&key).as_deref(), Some(&bytes[..]), "the S3 object differs from the recording");
    let manifest_key = format!("sessions/{id}.manifest.json");
    let local_manifest =
        std::fs::read(broker.data_dir().join("recordings").join(format!("{id}.manifest.json")));
    assert_eq!(cloud.object(&manifest_key), local_manifest.ok());
    assert_eq!(cloud.sse(&key), "AES256");
    assert_eq!(cloud.sse(&manifest_key), "AES256");
    assert_eq!(
        cloud.keys(&format!("{key}.live/")),
        Vec::<String>::new(),
        "live objects are removed at the end"
    );

    assert_stream_is_recording(&cloud, &id, &bytes);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r"\u001b[31mred"), "ANSI kept: {text}");
    let manifest: Value = serde_json::from_str(&cloud.log_messages(&format!("{id}.manifest"))[0]).unwrap();
    assert_eq!(manifest["size"], text.len() as u64);
    let history = broker.api(&["describe-sessions", "--state", "History"]);
    let session = &history["Sessions"][0];
    assert_eq!(session["OutputUrl"]["S3OutputUrl"], format!("s3://{BUCKET}/{key}"), "{session}");
    assert_eq!(session["OutputUrl"]["CloudWatchOutputUrl"], format!("{GROUP}:{id}"), "{session}");
}

#[test]
fn an_outage_of_s3_and_cloudwatch_keeps_sessions_going_and_loses_nothing() {
    let cloud = Cloud::start();
    let broker = cloud.broker_in(tempfile::tempdir().unwrap());
    broker.set_preferences(cloud_prefs(false));
    let agent = broker.agent("a");
    let script = "for i in $(seq 1 45); do echo tick-$i; sleep 1; done; echo outage-done";
    let mut child = broker.command(&agent.instance_id, script).stdout(Stdio::piped()).spawn().unwrap();
    let rx = lines_of(&mut child);
    let _cli = Proc(child);
    wait_line(&rx, "tick-3");
    let id = spooled_session(&broker.data_dir().join("spool"), "tick-3");
    let key = format!("sessions/{id}.cast");
    wait_for("the first ticks in S3", Duration::from_secs(10), || {
        String::from_utf8_lossy(&cloud.live_bytes(&key)).contains("tick-3").then_some(())
    });

    cloud.moto.pause();
    let paused = Instant::now();
    // The session goes on while both services are gone.
    wait_line(&rx, "tick-25");
    std::thread::sleep(Duration::from_secs(30).saturating_sub(paused.elapsed()));
    let status = broker.api(&["recordings", "status"]);
    let pending: Vec<&str> =
        status["PendingDeliveries"].as_array().unwrap().iter().filter_map(|d| d["Sink"].as_str()).collect();
    assert!(pending.contains(&"s3") && pending.contains(&"cloudwatch"), "{status}");
    cloud.moto.resume();

    wait_line(&rx, "outage-done");
    let (_, bytes) = wait_delivered(&broker, &id, Duration::from_secs(120));
    assert_eq!(cloud.object(&key).as_deref(), Some(&bytes[..]), "the S3 object differs from the recording");
    assert_stream_is_recording(&cloud, &id, &bytes);
    let text = String::from_utf8(bytes).unwrap();
    assert!((1..=45).all(|i| text.contains(&format!("\"tick-{i}\\n\"]"))), "{text}");
}

#[test]
fn a_broker_killed_mid_session_delivers_the_recording_after_its_restart() {
    let cloud = Cloud::start();
    let broker = cloud.broker_in(tempfile::tempdir().unwrap());
    // A session that cannot resume after the restart (wire.md §2.4): its recording is closed.
    let mut prefs = cloud_prefs(false);
    prefs["resumeWindowSeconds"] = 0.into();
    broker.set_preferences(prefs);
    let agent = broker.agent("a");
    let cli = broker
        .command(&agent.instance_id, "echo kill-marker-$((6*7)); sleep 300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _cli = Proc(cli);
    let id = spooled_session(&broker.data_dir().join("spool"), "kill-marker-42");
    let key = format!("sessions/{id}.cast");
    wait_for("the marker in S3", Duration::from_secs(10), || {
        String::from_utf8_lossy(&cloud.live_bytes(&key)).contains("kill-marker-42").then_some(())
    });

    let Broker { dir, key_id, secret, mut proc, .. } = broker;
    assert!(Command::new("kill").args(["-9", &proc.0.id().to_string()]).status().unwrap().success());
    proc.0.wait().unwrap();
    let mut broker = cloud.broker_in(dir);
    (broker.key_id, broker.secret) = (key_id, secret);

    let (_, bytes) = wait_delivered(&broker, &id, Duration::from_secs(60));
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.trim_end().ends_with("\"m\", \"session ended: BrokerCrashed\"]"), "{text}");
    assert_eq!(cloud.object(&key).as_deref(), Some(&bytes[..]));
    let manifest: Value =
        serde_json::from_slice(&cloud.object(&format!("sessions/{id}.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["end_reason"], "BrokerCrashed");
    assert_stream_is_recording(&cloud, &id, &bytes);
}

#[test]
fn a_full_spool_raises_the_alarm_and_refuses_sessions_that_must_be_recorded() {
    // Nothing listens on port 1, so the S3 copy never leaves the spool.
    let env = [("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_REGION", REGION)];
    let broker = Broker::start_in_env(
        tempfile::tempdir().unwrap(),
        &["--aws-endpoint-url", "http://127.0.0.1:1", "--spool-cap", "4KiB"],
        &env,
    );
    broker.set_preferences(json!({ "s3BucketName": BUCKET }));
    let agent = broker.agent("a");
    let out = broker.command(&agent.instance_id, "head -c 6000 /dev/zero | base64").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let status = wait_for("the alarm and the S3 error", Duration::from_secs(30), || {
        let out = broker.cli().args(["recordings", "status"]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let failing = v["PendingDeliveries"]
            .as_array()?
            .iter()
            .any(|d| d["Sink"] == "s3" && d["LastError"].is_string());
        (out.status.code() == Some(3) && v["Spool"]["Alarm"] == true && failing).then_some(v)
    });
    assert!(status["Spool"]["UsedBytes"].as_u64().unwrap() >= 4096, "{status}");

    let out = broker.command(&agent.instance_id, "echo should-not-run").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spool is full") && stderr.contains("refused"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    assert!(broker.log.lock().unwrap().contains("ALARM: the recording spool is over its cap"));
}
