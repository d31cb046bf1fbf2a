//! Tests of `preferences`: every input, each bad value, the defaults and the string forms.

use serde_json::json;

use super::*;

fn doc(inputs: Value) -> String {
    json!({"schemaVersion": "1.0", "description": "prefs", "sessionType": "Standard_Stream", "inputs": inputs})
        .to_string()
}

fn prefs(inputs: Value) -> SessionPreferences {
    parse_session_document(&doc(inputs)).unwrap()
}

fn refused(inputs: Value) -> PreferencesError {
    parse_session_document(&doc(inputs)).unwrap_err()
}

/// The refusal's message names `field` and the code is InvalidDocumentContent.
fn assert_refused(inputs: Value, field: &str) {
    let e = refused(inputs.clone());
    assert_eq!(e.code(), "InvalidDocumentContent", "{inputs}: {e}");
    assert!(e.to_string().contains(field), "{inputs}: {e} does not name {field}");
}

const MIN: u64 = 60;

#[test]
fn defaults() {
    let d = SessionPreferences::default();
    assert_eq!(d.idle_timeout, Duration::from_secs(20 * MIN));
    assert!(d.require_recording && !d.record_port_data && !d.run_as_enabled);
    assert_eq!((d.s3, d.cloudwatch, d.kms_key_id, d.run_as, d.max_duration), (None, None, None, None, None));
    assert_eq!(d.shell_profile, None);
    assert_eq!(prefs(json!({})), SessionPreferences::default());
    let no_inputs = r#"{"schemaVersion": "1.0", "sessionType": "Standard_Stream"}"#;
    assert_eq!(parse_session_document(no_inputs).unwrap(), SessionPreferences::default());
}

#[test]
fn every_field() {
    let p = prefs(json!({
        "s3BucketName": "my-bucket.logs",
        "s3KeyPrefix": "sessions/",
        "s3EncryptionEnabled": true,
        "cloudWatchLogGroupName": "/airlock/sessions#1",
        "cloudWatchEncryptionEnabled": true,
        "cloudWatchStreamingEnabled": true,
        "kmsKeyId": "alias/airlock",
        "runAsEnabled": true,
        "runAsDefaultUser": "ops_user",
        "idleSessionTimeout": "15",
        "maxSessionDuration": "120",
        "shellProfile": {"linux": "  exec bash -l\n", "windows": "cmd"},
        "requireRecording": false,
        "recordPortData": true,
        "resumeWindowSeconds": 90
    }));
    assert_eq!(
        p,
        SessionPreferences {
            s3: Some(S3Preferences {
                bucket: "my-bucket.logs".into(),
                key_prefix: "sessions/".into(),
                encryption: true
            }),
            cloudwatch: Some(CloudWatchPreferences {
                group: "/airlock/sessions#1".into(),
                encryption_required: true,
                streaming: true
            }),
            kms_key_id: Some("alias/airlock".into()),
            run_as: Some("ops_user".into()),
            run_as_enabled: true,
            idle_timeout: Duration::from_secs(15 * MIN),
            max_duration: Some(Duration::from_secs(120 * MIN)),
            shell_profile: Some("exec bash -l".into()),
            require_recording: false,
            record_port_data: true,
            resume_window: Duration::from_secs(90),
        }
    );
}

#[test]
fn resume_window_is_whole_seconds_up_to_a_day() {
    assert_eq!(prefs(json!({})).resume_window, Duration::from_secs(600));
    assert_eq!(prefs(json!({"resumeWindowSeconds": 0})).resume_window, Duration::ZERO);
    assert_eq!(prefs(json!({"resumeWindowSeconds": "86400"})).resume_window, Duration::from_secs(86_400));
    for bad in [json!(86_401), json!(-1), json!(1.5), json!("ten")] {
        let err = refused(json!({"resumeWindowSeconds": bad})).to_string();
        assert!(err.contains("inputs.resumeWindowSeconds") && err.contains("seconds"), "{bad}: {err}");
    }
}

#[test]
fn empty_strings_mean_not_set() {
    let p = prefs(json!({
        "s3BucketName": "", "s3KeyPrefix": "", "s3EncryptionEnabled": "",
        "cloudWatchLogGroupName": "", "cloudWatchEncryptionEnabled": "", "cloudWatchStreamingEnabled": "",
        "kmsKeyId": "", "runAsEnabled": "", "runAsDefaultUser": "",
        "idleSessionTimeout": "", "maxSessionDuration": "", "shellProfile": {"linux": " ", "windows": ""},
        "requireRecording": "", "recordPortData": null
    }));
    assert_eq!(p, SessionPreferences::default());
}

#[test]
fn sinks_only_with_a_name() {
    let p =
        prefs(json!({"s3KeyPrefix": "x", "s3EncryptionEnabled": true, "cloudWatchStreamingEnabled": true}));
    assert_eq!((p.s3, p.cloudwatch), (None, None));
    let p = prefs(json!({"s3BucketName": "bucket-1", "cloudWatchLogGroupName": "g"}));
    assert_eq!(
        p.s3,
        Some(S3Preferences { bucket: "bucket-1".into(), key_prefix: String::new(), encryption: false })
    );
    assert_eq!(
        p.cloudwatch,
        Some(CloudWatchPreferences { group: "g".into(), encryption_required: false, streaming: false })
    );
}

#[test]
fn booleans_as_strings() {
    for (value, want) in [
        (json!(true), true),
        (json!(false), false),
        (json!("true"), true),
        (json!("false"), false),
        (json!("TRUE"), true),
        (json!(" False "), false),
    ] {
        for key in [
            "s3EncryptionEnabled",
            "cloudWatchEncryptionEnabled",
            "cloudWatchStreamingEnabled",
            "runAsEnabled",
            "requireRecording",
            "recordPortData",
        ] {
            let p = prefs(json!({
                "s3BucketName": "bucket-1", "cloudWatchLogGroupName": "g", key: value.clone()
            }));
            let got = match key {
                "s3EncryptionEnabled" => p.s3.map(|s| s.encryption),
                "cloudWatchEncryptionEnabled" => p.cloudwatch.map(|c| c.encryption_required),
                "cloudWatchStreamingEnabled" => p.cloudwatch.map(|c| c.streaming),
                "runAsEnabled" => Some(p.run_as_enabled),
                "requireRecording" => Some(p.require_recording),
                _ => Some(p.record_port_data),
            };
            assert_eq!(got, Some(want), "{key} = {value}");
        }
    }
    for bad in [json!("yes"), json!(1), json!("1"), json!([true]), json!({})] {
        for key in ["s3EncryptionEnabled", "runAsEnabled", "requireRecording", "recordPortData"] {
            assert_refused(json!({ key: bad.clone() }), &format!("inputs.{key}"));
        }
    }
}

#[test]
fn timeouts() {
    let idle = |v: Value| prefs(json!({"idleSessionTimeout": v})).idle_timeout;
    assert_eq!(idle(json!("1")), Duration::from_secs(MIN));
    assert_eq!(idle(json!(60)), Duration::from_secs(60 * MIN));
    assert_eq!(idle(json!(" 30 ")), Duration::from_secs(30 * MIN));
    for bad in [
        json!("0"),
        json!("61"),
        json!(0),
        json!(61),
        json!("1.5"),
        json!(1.5),
        json!("-1"),
        json!("x"),
        json!(true),
    ] {
        let e = refused(json!({"idleSessionTimeout": bad.clone()}));
        assert!(
            e.to_string().contains("inputs.idleSessionTimeout") && e.to_string().contains("1 to 60"),
            "{bad}: {e}"
        );
    }
    let max = |v: Value| prefs(json!({"maxSessionDuration": v})).max_duration;
    assert_eq!(max(json!("1440")), Some(Duration::from_secs(1440 * MIN)));
    assert_eq!(max(json!(1)), Some(Duration::from_secs(MIN)));
    assert_eq!(max(json!("")), None);
    for bad in [json!("0"), json!("1441"), json!(2000), json!("two")] {
        assert_refused(json!({"maxSessionDuration": bad}), "inputs.maxSessionDuration");
    }
}

#[test]
fn bucket_names() {
    for good in ["abc", "my.bucket-1", "0bucket9", &"a".repeat(63)] {
        assert_eq!(prefs(json!({"s3BucketName": good})).s3.map(|s| s.bucket), Some(good.to_string()));
    }
    for bad in [
        "ab",
        &"a".repeat(64),
        "My-Bucket",
        "bucket_1",
        "-bucket",
        "bucket.",
        "a..b",
        "a.-b",
        "192.168.1.1",
        "xn--bucket",
        "bucket-s3alias",
        "has space",
    ] {
        assert_refused(json!({"s3BucketName": bad}), "inputs.s3BucketName");
    }
    assert_refused(json!({"s3BucketName": 7}), "inputs.s3BucketName");
    assert_refused(json!({"s3KeyPrefix": "a\nb"}), "inputs.s3KeyPrefix");
    assert_refused(json!({"s3KeyPrefix": "k".repeat(1025)}), "inputs.s3KeyPrefix");
    assert_refused(json!({"s3KeyPrefix": false}), "inputs.s3KeyPrefix");
}

#[test]
fn log_groups_and_keys() {
    for bad in [json!("has space"), json!("a:b"), json!("g".repeat(513)), json!(["g"])] {
        assert_refused(json!({"cloudWatchLogGroupName": bad}), "inputs.cloudWatchLogGroupName");
    }
    assert_refused(json!({"kmsKeyId": "alias/a b"}), "inputs.kmsKeyId");
    assert_refused(json!({"kmsKeyId": 12}), "inputs.kmsKeyId");
    let arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert_eq!(prefs(json!({"kmsKeyId": arn})).kms_key_id.as_deref(), Some(arn));
}

#[test]
fn run_as() {
    let p = prefs(json!({"runAsEnabled": false, "runAsDefaultUser": "ops"}));
    assert_eq!((p.run_as, p.run_as_enabled), (None, false), "only when enabled");
    let p = prefs(json!({"runAsEnabled": "true"}));
    assert_eq!((p.run_as, p.run_as_enabled), (None, true), "enabled without a default user");
    for good in ["root", "_svc", "deploy-bot", "a.b", "machine$"] {
        assert_eq!(
            prefs(json!({"runAsEnabled": true, "runAsDefaultUser": good})).run_as.as_deref(),
            Some(good)
        );
    }
    for bad in ["1user", "-x", ".x", "a b", "a/b", "a:b", &"u".repeat(33), "ü"] {
        assert_refused(json!({"runAsEnabled": true, "runAsDefaultUser": bad}), "inputs.runAsDefaultUser");
    }
    // Not checked while RunAs is off, but still a string.
    assert!(prefs(json!({"runAsDefaultUser": "1user"})).run_as.is_none());
    assert_refused(json!({"runAsDefaultUser": 5}), "inputs.runAsDefaultUser");
}

#[test]
fn shell_profile() {
    assert_eq!(
        prefs(json!({"shellProfile": {"linux": "cd /srv"}})).shell_profile.as_deref(),
        Some("cd /srv")
    );
    assert_eq!(prefs(json!({"shellProfile": {"windows": "dir"}})).shell_profile, None);
    assert_refused(json!({"shellProfile": "cd /"}), "inputs.shellProfile");
    assert_refused(json!({"shellProfile": {"linux": 1}}), "inputs.shellProfile.linux");
    assert_refused(json!({"shellProfile": {"windows": []}}), "inputs.shellProfile.windows");
    let e = refused(json!({"shellProfile": {"macos": "x"}}));
    assert!(e.to_string().contains("inputs.shellProfile has unknown members: macos"), "{e}");
}

#[test]
fn unknown_inputs_are_named() {
    let e = refused(json!({"idleSessionTimeout": "20", "s3Bucket": "x", "colour": "red"}));
    assert_eq!(e.code(), "InvalidDocumentContent");
    let text = e.to_string();
    assert!(text.starts_with("inputs has unknown members: colour, s3Bucket (known: s3BucketName"), "{text}");
}

#[test]
fn document_shape() {
    let bad = |content: &str| parse_document(content).unwrap_err();
    assert!(matches!(bad("{not json"), PreferencesError::Json(_)));
    assert_eq!(bad("{not json").code(), "InvalidDocumentContent");
    assert!(bad("[]").to_string().contains("must be a JSON object"));
    for schema in [r#""2.0""#, "1.0", "null"] {
        let e = bad(&format!(r#"{{"schemaVersion": {schema}, "sessionType": "Standard_Stream"}}"#));
        assert_eq!(e.code(), "InvalidDocumentSchemaVersion", "{schema}: {e}");
        assert!(e.to_string().starts_with("schemaVersion: "), "{e}");
    }
    assert_eq!(bad(r#"{"sessionType": "Standard_Stream"}"#).code(), "InvalidDocumentSchemaVersion");
    let e = bad(r#"{"schemaVersion": "1.0", "sessionType": "Interactive"}"#);
    assert!(e.to_string().starts_with("sessionType: \"Interactive\" is not one of Standard_Stream"), "{e}");
    assert!(bad(r#"{"schemaVersion": "1.0"}"#).to_string().starts_with("sessionType: missing"));
    let e = bad(r#"{"schemaVersion": "1.0", "sessionType": "Port", "mainSteps": []}"#);
    assert!(e.to_string().starts_with("the document has unknown members: mainSteps"), "{e}");
    for (member, value) in
        [("description", "1"), ("inputs", "[]"), ("parameters", "\"x\""), ("properties", "2")]
    {
        let e = bad(&format!(r#"{{"schemaVersion": "1.0", "sessionType": "Port", "{member}": {value}}}"#));
        assert!(e.to_string().starts_with(member), "{member}: {e}");
    }
    let port = parse_document(
        r#"{"schemaVersion": "1.0", "description": "d", "sessionType": "Port",
            "parameters": {"portNumber": {"type": "String", "default": "22", "description": "port"},
                           "host": {"type": "String"}, "count": {"default": 3}},
            "properties": {"portNumber": "{{ portNumber }}"}}"#,
    )
    .unwrap();
    assert_eq!((port.session_type, port.description.as_str()), (SessionType::Port, "d"));
    let params: Vec<(&str, &str, Option<&str>)> =
        port.parameters.iter().map(|p| (p.name.as_str(), p.kind.as_str(), p.default.as_deref())).collect();
    assert_eq!(
        params,
        [("count", "String", Some("3")), ("host", "String", None), ("portNumber", "String", Some("22"))]
    );
    let e = bad(r#"{"schemaVersion": "1.0", "sessionType": "Port", "parameters": {"p": {"type": 1}}}"#);
    assert!(e.to_string().starts_with("parameters.p.type"), "{e}");
}

#[tokio::test]
async fn load_reads_the_latest_shell_document() {
    use crate::store::{DocumentStore, DocumentVersion, NewVersion, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
    assert_eq!(load(&store).await.unwrap(), SessionPreferences::default());
    let v1 = DocumentVersion {
        name: PREFERENCES_DOCUMENT.into(),
        version: 1,
        content: doc(json!({"idleSessionTimeout": "5"})),
        document_format: "JSON".into(),
        document_type: "Session".into(),
        created_us: 1,
        sha256: String::new(),
        tags: Vec::new(),
    };
    assert!(store.create_document(&v1).await.unwrap());
    assert_eq!(load(&store).await.unwrap().idle_timeout, Duration::from_secs(5 * MIN));
    let v2 = NewVersion {
        content: doc(json!({"idleSessionTimeout": "7", "requireRecording": false})),
        document_format: "JSON".into(),
        created_us: 2,
        sha256: String::new(),
        expected_latest: None,
    };
    store.add_document_version(PREFERENCES_DOCUMENT, &v2).await.unwrap().unwrap();
    let p = load(&store).await.unwrap();
    assert_eq!((p.idle_timeout, p.require_recording), (Duration::from_secs(7 * MIN), false));
    // A hand-edited, invalid version is an error, not silently the defaults.
    let v3 = NewVersion { content: "{}".into(), ..v2 };
    store.add_document_version(PREFERENCES_DOCUMENT, &v3).await.unwrap().unwrap();
    let e = load(&store).await.unwrap_err();
    assert!(e.to_string().contains("version 3 is not valid"), "{e}");
}
