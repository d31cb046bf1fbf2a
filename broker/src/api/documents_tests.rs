//! Tests of `documents`: the six operations against a real store, with a recording authorizer
//! in place of the Gate.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::api::sessions::{
    COMMAND_DOCUMENT, INTERACTIVE_DOCUMENT, PORT_DOCUMENT, REMOTE_PORT_DOCUMENT, SSH_DOCUMENT,
};
use crate::preferences::{self, SessionPreferences};
use crate::store::{DocumentStore, SqliteStore};

const ACCOUNT: &str = "123456789012";

/// One authorization the operations asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Asked {
    action: String,
    name: Option<String>,
    existing_tags: Vec<(String, String)>,
    request_tags: Vec<String>,
    audit: bool,
}

/// Allows (or denies) everything and notes what was asked.
#[derive(Default)]
struct Recorder {
    deny: bool,
    asked: Mutex<Vec<Asked>>,
}

impl Authorize for Recorder {
    async fn authorize(
        &self,
        op: Op,
        name: Option<&str>,
        existing: Option<&DocumentVersion>,
        request_tags: &[Tag],
    ) -> Result<(), ApiError> {
        let (action, audit) = (op.action(), op.audited());
        self.asked.lock().unwrap().push(Asked {
            action: action.into(),
            name: name.map(str::to_owned),
            existing_tags: existing.map(|d| d.tags.clone()).unwrap_or_default(),
            request_tags: request_tags.iter().map(|t| format!("{}={}", t.key, t.value)).collect(),
            audit,
        });
        if self.deny {
            return Err(ApiError::bad(
                "AccessDeniedException",
                format!("not authorized to perform: {action}"),
            ));
        }
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    auth: Recorder,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
    Env { _dir: dir, store, auth: Recorder::default() }
}

impl Env {
    async fn call_as(&self, auth: &Recorder, op: &str, body: Value) -> Result<Value, ApiError> {
        let docs = Docs { store: &self.store, account: ACCOUNT };
        let op = Op::from_target(&format!("AmazonSSM.{op}")).expect("a document operation");
        run(auth, &docs, op, body.to_string().as_bytes()).await
    }

    async fn call(&self, op: &str, body: Value) -> Result<Value, ApiError> {
        self.call_as(&self.auth, op, body).await
    }

    async fn code(&self, op: &str, body: Value) -> (&'static str, String) {
        let e = self.call(op, body.clone()).await.expect_err(&format!("{op} {body} should fail"));
        (e.code, e.message)
    }
}

fn prefs(inputs: Value) -> String {
    json!({"schemaVersion": "1.0", "description": "Session Manager preferences", "sessionType": "Standard_Stream",
           "inputs": inputs})
    .to_string()
}

const SHELL: &str = PREFERENCES_DOCUMENT;

#[tokio::test]
async fn versions_advance_and_preferences_follow() {
    let env = env().await;
    let content = prefs(json!({"idleSessionTimeout": "5", "s3BucketName": ""}));
    let v = env
        .call(
            "CreateDocument",
            json!({"Name": SHELL, "DocumentType": "Session", "Content": content,
                   "Tags": [{"Key": "team", "Value": "ops"}]}),
        )
        .await
        .unwrap();
    // Members this broker does not keep are refused by name, not silently dropped.
    let e = env
        .call(
            "CreateDocument",
            json!({"Name": "Other", "DocumentType": "Session", "Content": content,
            "VersionName": "v1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "SerializationException");
    assert!(e.message.contains("unknown field `VersionName`"), "{}", e.message);
    let d = &v["DocumentDescription"];
    assert_eq!(d["Name"], SHELL);
    assert_eq!(d["Hash"], sha256_hex(&content));
    assert_eq!((d["HashType"].as_str(), d["Status"].as_str()), (Some("Sha256"), Some("Active")));
    assert_eq!(d["Owner"], ACCOUNT);
    assert_eq!((d["DocumentVersion"].as_str(), d["LatestVersion"].as_str()), (Some("1"), Some("1")));
    assert_eq!(d["DefaultVersion"], "1");
    assert_eq!((d["DocumentType"].as_str(), d["DocumentFormat"].as_str()), (Some("Session"), Some("JSON")));
    assert_eq!(
        (d["SchemaVersion"].as_str(), d["Description"].as_str()),
        (Some("1.0"), Some("Session Manager preferences"))
    );
    assert_eq!(d["PlatformTypes"], json!(["Linux", "MacOS"]));
    assert_eq!(d["Parameters"], json!([]));
    assert_eq!(d["Tags"], json!([{"Key": "team", "Value": "ops"}]));
    assert!(d["CreatedDate"].as_i64().unwrap() > 1_700_000_000);
    let p = preferences::load(&env.store).await.unwrap();
    assert_eq!(p.idle_timeout.as_secs(), 300);

    let v2 = prefs(json!({"idleSessionTimeout": "7"}));
    let d = env
        .call("UpdateDocument", json!({"Name": SHELL, "Content": v2, "DocumentVersion": "$LATEST"}))
        .await
        .unwrap();
    assert_eq!(d["DocumentDescription"]["DocumentVersion"], "2");
    assert_eq!(d["DocumentDescription"]["Tags"], json!([{"Key": "team", "Value": "ops"}]));
    let v3 = prefs(json!({"idleSessionTimeout": 9, "requireRecording": "false"}));
    let d = env
        .call("UpdateDocument", json!({"Name": SHELL, "Content": v3, "DocumentVersion": "2"}))
        .await
        .unwrap();
    assert_eq!(
        (
            d["DocumentDescription"]["LatestVersion"].as_str(),
            d["DocumentDescription"]["DefaultVersion"].as_str()
        ),
        (Some("3"), Some("3"))
    );
    let p = preferences::load(&env.store).await.unwrap();
    assert_eq!((p.idle_timeout.as_secs(), p.require_recording), (540, false));

    let d = env.call("DescribeDocument", json!({"Name": SHELL})).await.unwrap();
    assert_eq!(
        (d["Document"]["DocumentVersion"].as_str(), d["Document"]["DefaultVersion"].as_str()),
        (Some("3"), Some("3"))
    );
    let d = env.call("DescribeDocument", json!({"Name": SHELL, "DocumentVersion": "1"})).await.unwrap();
    assert_eq!(
        (d["Document"]["DocumentVersion"].as_str(), d["Document"]["LatestVersion"].as_str()),
        (Some("1"), Some("3"))
    );
    assert_eq!(d["Document"]["Hash"], sha256_hex(&content));
    let g = env.call("GetDocument", json!({"Name": SHELL, "DocumentVersion": "2"})).await.unwrap();
    assert_eq!((g["Content"].as_str(), g["DocumentVersion"].as_str()), (Some(v2.as_str()), Some("2")));
    assert_eq!(
        (g["Status"].as_str(), g["DocumentType"].as_str(), g["DocumentFormat"].as_str()),
        (Some("Active"), Some("Session"), Some("JSON"))
    );
    let g = env.call("GetDocument", json!({"Name": SHELL, "DocumentVersion": "$DEFAULT"})).await.unwrap();
    assert_eq!(g["Content"], v3.as_str());
    let arn = format!("arn:airlock:ssm:us-east-1::document/{SHELL}");
    assert_eq!(env.call("GetDocument", json!({"Name": arn})).await.unwrap()["DocumentVersion"], "3");

    for (version, code) in
        [("9", "InvalidDocumentVersion"), ("0", "InvalidDocumentVersion"), ("x", "InvalidDocumentVersion")]
    {
        assert_eq!(env.code("GetDocument", json!({"Name": SHELL, "DocumentVersion": version})).await.0, code);
    }
    let same = json!({"Name": SHELL, "Content": v3, "DocumentVersion": "$LATEST"});
    assert_eq!(env.code("UpdateDocument", same).await.0, "DuplicateDocumentContent");
    let other = prefs(json!({"idleSessionTimeout": "11"}));
    for version in ["1", "4", "$DEFAULT", "latest"] {
        let (code, message) = env
            .code("UpdateDocument", json!({"Name": SHELL, "Content": other, "DocumentVersion": version}))
            .await;
        assert_eq!(code, "InvalidDocumentVersion", "{version}: {message}");
    }
    let e = env.code("UpdateDocument", json!({"Name": "Nope-Doc", "Content": other})).await;
    assert_eq!(e.0, "InvalidDocument");

    env.call("DeleteDocument", json!({"Name": SHELL})).await.unwrap();
    assert_eq!(preferences::load(&env.store).await.unwrap(), SessionPreferences::default());
    assert_eq!(env.code("GetDocument", json!({"Name": SHELL})).await.0, "InvalidDocument");
    assert_eq!(env.code("DescribeDocument", json!({"Name": SHELL})).await.0, "InvalidDocument");
    assert_eq!(env.code("DeleteDocument", json!({"Name": SHELL})).await.0, "InvalidDocument");
}

#[tokio::test]
async fn bad_content_and_names_are_refused_precisely() {
    let env = env().await;
    let create = |content: String, extra: Value| {
        let mut body = json!({"Name": SHELL, "DocumentType": "Session", "Content": content});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            create(prefs(json!({"colour": "red"})), json!({})),
            "InvalidDocumentContent",
            "inputs has unknown members: colour",
        ),
        (
            create(prefs(json!({"idleSessionTimeout": "0"})), json!({})),
            "InvalidDocumentContent",
            "inputs.idleSessionTimeout",
        ),
        (
            create(prefs(json!({"idleSessionTimeout": "61"})), json!({})),
            "InvalidDocumentContent",
            "inputs.idleSessionTimeout",
        ),
        (
            create(json!({"schemaVersion": "2.0", "sessionType": "Standard_Stream"}).to_string(), json!({})),
            "InvalidDocumentSchemaVersion",
            "schemaVersion",
        ),
        (
            create(prefs(json!({})), json!({"DocumentFormat": "YAML"})),
            "InvalidDocumentContent",
            "YAML documents are not supported; send JSON",
        ),
        (
            create("schemaVersion: '1.0'\n".into(), json!({})),
            "InvalidDocumentContent",
            "YAML documents are not supported; send JSON",
        ),
        (create("{\"schemaVersion\": ".into(), json!({})), "InvalidDocumentContent", "not valid JSON"),
        (create(prefs(json!({})), json!({"DocumentFormat": "TEXT"})), "InvalidDocumentContent", "TEXT"),
        (
            create(json!({"schemaVersion": "1.0", "sessionType": "Port"}).to_string(), json!({})),
            "InvalidDocumentContent",
            "must be Standard_Stream",
        ),
        (
            create(prefs(json!({"shellProfile": {"linux": "x".repeat(MAX_CONTENT)}})), json!({})),
            "MaxDocumentSizeExceeded",
            "65536",
        ),
        // A Command document is Run Command's schema 2.2, not Session Manager's.
        (
            create(prefs(json!({})), json!({"DocumentType": "Command", "Name": "Custom-Doc"})),
            "InvalidDocumentSchemaVersion",
            "2.2",
        ),
        (create(prefs(json!({})), json!({"DocumentType": "Automation"})), "InvalidDocumentType", "Session"),
        (json!({"Name": SHELL, "Content": prefs(json!({}))}), "InvalidDocumentType", "absent"),
        (create(prefs(json!({})), json!({"Name": "a/b"})), "ValidationException", "a/b"),
        (create(prefs(json!({})), json!({"Name": "ab"})), "ValidationException", "pattern"),
        (
            create(prefs(json!({})), json!({"Tags": [{"Key": "aws:x", "Value": "y"}]})),
            "InvalidParameters",
            "aws:",
        ),
    ];
    for (body, code, needle) in cases {
        let (got, message) = env.code("CreateDocument", body.clone()).await;
        assert_eq!(got, code, "{body}: {message}");
        assert!(message.contains(needle), "{message} does not contain {needle:?}");
    }
    assert!(env.store.documents().await.unwrap().is_empty(), "nothing was stored");

    let ok = create(prefs(json!({})), json!({}));
    env.call("CreateDocument", ok.clone()).await.unwrap();
    assert_eq!(env.code("CreateDocument", ok).await.0, "DocumentAlreadyExists");
    // Any other name may hold any session type.
    let port = json!({"schemaVersion": "1.0", "sessionType": "Port", "properties": {"portNumber": "22"}});
    env.call("CreateDocument", create(port.to_string(), json!({"Name": "My-Port"}))).await.unwrap();
    let bad_update = json!({"Name": SHELL, "Content": prefs(json!({"maxSessionDuration": "1441"}))});
    assert_eq!(env.code("UpdateDocument", bad_update).await.0, "InvalidDocumentContent");
    assert_eq!(env.store.document_latest_version(SHELL).await.unwrap(), Some(1));
}

#[tokio::test]
async fn amazon_documents_are_read_only() {
    let env = env().await;
    for (name, _) in BUILTINS {
        let doc = parse_document(&builtin(name).unwrap().content).unwrap();
        let want = match name {
            COMMAND_DOCUMENT => SessionType::NonInteractiveCommands,
            INTERACTIVE_DOCUMENT => SessionType::InteractiveCommands,
            _ => SessionType::Port,
        };
        assert_eq!(doc.session_type, want, "{name}");
        let g = env.call("GetDocument", json!({"Name": name})).await.unwrap();
        assert_eq!(g["DocumentVersion"], "1");
        let d = &env.call("DescribeDocument", json!({"Name": name})).await.unwrap()["Document"];
        assert_eq!((d["Owner"].as_str(), d["LatestVersion"].as_str()), (Some("Amazon"), Some("1")));
        let update = json!({"Name": name, "Content": prefs(json!({}))});
        let (code, message) = env.code("UpdateDocument", update.clone()).await;
        assert_eq!(code, "InvalidDocumentOperation");
        assert!(message.contains("read-only"), "{message}");
        assert_eq!(env.code("DeleteDocument", json!({"Name": name})).await.0, "InvalidDocumentOperation");
        let create = json!({"Name": name, "Content": prefs(json!({})), "DocumentType": "Session"});
        assert_eq!(env.code("CreateDocument", create).await.0, "InvalidDocumentOperation");
        assert_eq!(
            env.code("GetDocument", json!({"Name": name, "DocumentVersion": "2"})).await.0,
            "InvalidDocumentVersion"
        );
    }
    let d = &env.call("DescribeDocument", json!({"Name": SSH_DOCUMENT})).await.unwrap()["Document"];
    assert_eq!(d["Parameters"][0]["Name"], "portNumber");
    assert_eq!(d["Parameters"][0]["DefaultValue"], "22");
    let d = &env.call("DescribeDocument", json!({"Name": REMOTE_PORT_DOCUMENT})).await.unwrap()["Document"];
    let names: Vec<&str> =
        d["Parameters"].as_array().unwrap().iter().map(|p| p["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["host", "localPortNumber", "portNumber"]);
    assert!(d["Parameters"][0].get("DefaultValue").is_none(), "host is required");
    for reserved in ["aws-mine", "Amazon-Prefs", "AMZN-x", "AWS-Nope"] {
        let create = json!({"Name": reserved, "Content": prefs(json!({})), "DocumentType": "Session"});
        assert_eq!(env.code("CreateDocument", create).await.0, "InvalidDocumentOperation", "{reserved}");
    }
    assert_eq!(env.code("GetDocument", json!({"Name": "AWS-Nope"})).await.0, "InvalidDocument");
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let env = env().await;
    for (name, tag) in [(SHELL, "a"), ("Team-Shell", "b")] {
        let body = json!({"Name": name, "DocumentType": "Session", "Content": prefs(json!({})),
                          "Tags": [{"Key": "env", "Value": tag}]});
        env.call("CreateDocument", body).await.unwrap();
    }
    env.call("UpdateDocument", json!({"Name": "Team-Shell", "Content": prefs(json!({"kmsKeyId": "k"}))}))
        .await
        .unwrap();
    let names = |v: &Value| -> Vec<String> {
        v["DocumentIdentifiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = env.call("ListDocuments", json!({})).await.unwrap();
    assert_eq!(
        names(&all),
        [
            INTERACTIVE_DOCUMENT,
            COMMAND_DOCUMENT,
            PORT_DOCUMENT,
            REMOTE_PORT_DOCUMENT,
            SSH_DOCUMENT,
            SHELL,
            "Team-Shell"
        ]
    );
    assert!(all.get("NextToken").is_none());
    let team = &all["DocumentIdentifiers"][6];
    assert_eq!((team["DocumentVersion"].as_str(), team["Owner"].as_str()), (Some("2"), Some(ACCOUNT)));
    assert_eq!(
        (team["SchemaVersion"].as_str(), team["DocumentFormat"].as_str()),
        (Some("1.0"), Some("JSON"))
    );
    assert_eq!(team["PlatformTypes"], json!(["Linux", "MacOS"]));
    assert_eq!(all["DocumentIdentifiers"][0]["Owner"], "Amazon");

    let filtered = |filters: Value| {
        let env = &env;
        async move { names(&env.call("ListDocuments", json!({"Filters": filters})).await.unwrap()) }
    };
    assert_eq!(filtered(json!([{"Key": "Owner", "Values": ["Self"]}])).await, [SHELL, "Team-Shell"]);
    assert_eq!(filtered(json!([{"Key": "Owner", "Values": ["Amazon"]}])).await.len(), 5);
    assert_eq!(
        filtered(json!([{"Key": "Name", "Values": ["AWS-StartPort"]}])).await,
        [PORT_DOCUMENT, REMOTE_PORT_DOCUMENT]
    );
    assert_eq!(filtered(json!([{"Key": "tag:env", "Values": ["b"]}])).await, ["Team-Shell"]);
    assert_eq!(
        filtered(
            json!([{"Key": "DocumentType", "Values": ["Session"]}, {"Key": "Owner", "Values": ["Self"]}])
        )
        .await
        .len(),
        2
    );
    assert!(filtered(json!([{"Key": "DocumentType", "Values": ["Command"]}])).await.is_empty());
    let old = env
        .call("ListDocuments", json!({"DocumentFilterList": [{"key": "Owner", "value": "Self"}]}))
        .await
        .unwrap();
    assert_eq!(names(&old), [SHELL, "Team-Shell"]);

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"MaxResults": 4});
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = env.call("ListDocuments", body).await.unwrap();
        seen.extend(names(&page));
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, names(&all));
    assert_eq!(env.code("ListDocuments", json!({"NextToken": "garbage"})).await.0, "InvalidNextToken");
    assert_eq!(env.code("ListDocuments", json!({"MaxResults": 51})).await.0, "ValidationException");
    let (code, message) =
        env.code("ListDocuments", json!({"Filters": [{"Key": "Bogus", "Values": ["x"]}]})).await;
    assert_eq!(code, "InvalidFilterKey");
    assert!(message.contains("Bogus"), "{message}");
}

#[tokio::test]
async fn every_call_is_authorized_first_and_changes_are_audited() {
    let env = env().await;
    let body = json!({"Name": SHELL, "DocumentType": "Session", "Content": prefs(json!({})),
                      "Tags": [{"Key": "team", "Value": "ops"}]});
    env.call("CreateDocument", body.clone()).await.unwrap();
    let denied = Recorder { deny: true, ..Recorder::default() };
    let update = json!({"Name": SHELL, "Content": prefs(json!({"kmsKeyId": "k"}))});
    for (op, body) in [
        ("CreateDocument", body),
        ("UpdateDocument", update),
        ("GetDocument", json!({"Name": SHELL})),
        ("DescribeDocument", json!({"Name": SHELL, "DocumentVersion": "7"})),
        ("DeleteDocument", json!({"Name": SHELL})),
        ("ListDocuments", json!({"MaxResults": 500})),
        // Refused before anything is said about the document, or about AWS-owned ones.
        ("GetDocument", json!({"Name": "Nope-Doc"})),
        ("DeleteDocument", json!({"Name": SSH_DOCUMENT})),
    ] {
        let e = env.call_as(&denied, op, body).await.unwrap_err();
        assert_eq!(e.code, "AccessDeniedException", "{op}: {}", e.message);
    }
    assert_eq!(env.store.document_latest_version(SHELL).await.unwrap(), Some(1), "nothing changed");
    let asked = denied.asked.lock().unwrap().clone();
    let ops: Vec<(&str, Option<&str>, bool)> =
        asked.iter().map(|a| (a.action.as_str(), a.name.as_deref(), a.audit)).collect();
    assert_eq!(
        ops,
        [
            ("ssm:CreateDocument", Some(SHELL), true),
            ("ssm:UpdateDocument", Some(SHELL), true),
            ("ssm:GetDocument", Some(SHELL), false),
            ("ssm:DescribeDocument", Some(SHELL), false),
            ("ssm:DeleteDocument", Some(SHELL), true),
            ("ssm:ListDocuments", None, false),
            ("ssm:GetDocument", Some("Nope-Doc"), false),
            ("ssm:DeleteDocument", Some(SSH_DOCUMENT), true),
        ],
        "changes are audited, reads are not"
    );
    let ops_tag = vec![("team".to_owned(), "ops".to_owned())];
    assert_eq!(asked[0].request_tags, ["team=ops"], "CreateDocument passes the tags it sets");
    assert!(asked[0].existing_tags.is_empty());
    for a in &asked[1..5] {
        assert_eq!(a.existing_tags, ops_tag, "{} sees the document's tags", a.action);
    }
    // The allowed calls asked too.
    let allowed = env.auth.asked.lock().unwrap().clone();
    assert_eq!((allowed[0].action.as_str(), allowed[0].audit), ("ssm:CreateDocument", true));
}
