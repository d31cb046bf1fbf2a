//! Principals, policies and credentials enforced end to end (the stock-client view is in
//! tests/python; these cover what needs the broker's own files).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::SystemTime;

use common::Broker;
use serde_json::{json, Value};

fn admin(broker: &Broker, op: &str, body: Value) -> (u16, Value) {
    broker.raw_call(op, &body.to_string(), &broker.key_id, &broker.secret, SystemTime::now())
}

/// Creates a user with an inline policy and a key; returns (key id, secret).
fn user(broker: &Broker, name: &str, policy: Value) -> (String, String) {
    assert_eq!(admin(broker, "AirlockIAM.CreateUser", json!({"UserName": name})).0, 200);
    let (s, v) = admin(
        broker,
        "AirlockIAM.PutUserPolicy",
        json!({"UserName": name, "PolicyName": "p", "PolicyDocument": policy.to_string()}),
    );
    assert_eq!(s, 200, "{v}");
    let (_, v) = admin(broker, "AirlockIAM.CreateAccessKey", json!({"UserName": name}));
    (
        v["AccessKey"]["AccessKeyId"].as_str().unwrap().into(),
        v["AccessKey"]["SecretAccessKey"].as_str().unwrap().into(),
    )
}

#[test]
fn tag_scoped_start_session_is_decided_and_audited() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "DevHosts", "Effect": "Allow", "Action": "ssm:StartSession",
         "Resource": "arn:airlock:ssm:*:*:managed-instance/*",
         "Condition": {"StringEquals": {"ssm:resourceTag/Environment": "dev"}}},
        {"Sid": "Shell", "Effect": "Allow", "Action": "ssm:StartSession",
         "Resource": "arn:airlock:ssm:*::document/SSM-SessionManagerRunShell"},
        {"Sid": "Own", "Effect": "Allow", "Action": "ssm:TerminateSession",
         "Resource": "arn:airlock:ssm:*:*:session/${aws:username}-*"}]});
    let (kid, secret) = user(&broker, "dave", policy);
    let start = json!({"Target": agent.instance_id}).to_string();
    let call = |op: &str, body: &str| broker.raw_call(op, body, &kid, &secret, SystemTime::now());

    let (s, v) = call("AmazonSSM.StartSession", &start);
    assert_eq!((s, v["__type"].as_str()), (400, Some("AccessDeniedException")), "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(":user/dave") && msg.contains("ssm:StartSession") && msg.contains(&agent.instance_id),
        "{msg}"
    );

    let tags = json!({"ResourceType": "ManagedInstance", "ResourceId": agent.instance_id, "Tags": [{"Key": "Environment", "Value": "dev"}]});
    assert_eq!(admin(&broker, "AmazonSSM.AddTagsToResource", tags).0, 200);
    let (s, v) = call("AmazonSSM.StartSession", &start);
    assert_eq!(s, 200, "{v}");
    let id = v["SessionId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dave-"));
    let (s, _) = call("AmazonSSM.TerminateSession", &json!({"SessionId": id}).to_string());
    assert_eq!(s, 200, "dave may end his own session");
    // Not a document he is allowed.
    let (_, v) = call(
        "AmazonSSM.StartSession",
        &json!({"Target": agent.instance_id, "DocumentName": "AWS-StartSSHSession"}).to_string(),
    );
    assert_eq!(v["__type"], "AccessDeniedException");
    assert!(v["message"].as_str().unwrap().contains("document/AWS-StartSSHSession"));

    // Every decision on session actions is in the audit log, with the deciding statement.
    let (_, v) = admin(&broker, "AirlockIAM.ListAuditEvents", json!({"MaxResults": 50}));
    let events = v["Events"].as_array().unwrap();
    let of = |decision: &str, action: &str| {
        events
            .iter()
            .filter(|e| {
                e["Decision"] == decision
                    && e["Action"] == action
                    && e["Principal"].as_str().unwrap().ends_with("user/dave")
            })
            .count()
    };
    assert!(of("implicitDeny", "ssm:StartSession") >= 2, "{v}");
    assert!(of("allowed", "ssm:StartSession") >= 2);
    assert_eq!(of("allowed", "ssm:TerminateSession"), 1);
    assert!(events.iter().any(|e| e["Sid"] == "DevHosts" && e["Decision"] == "allowed"));

    // The simulator explains the same decision.
    let sim = json!({"PolicySourceArn": format!("arn:airlock:iam::{}:user/dave", account(&broker)),
        "ActionNames": ["ssm:StartSession"], "ResourceArns": ["arn:airlock:ssm:us-east-1:1:managed-instance/mi-00000000000000001"],
        "ContextEntries": [{"ContextKeyName": "ssm:resourceTag/Environment", "ContextKeyValues": ["dev"], "ContextKeyType": "string"}]});
    let (s, v) = admin(&broker, "AirlockIAM.SimulatePrincipalPolicy", sim);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["EvaluationResults"][0]["EvalDecision"], "allowed");
    assert_eq!(v["EvaluationResults"][0]["MatchedStatements"][0]["Sid"], "DevHosts");
}

fn account(broker: &Broker) -> String {
    std::fs::read_to_string(broker.data_dir().join("account-id")).unwrap().trim().to_owned()
}

#[test]
fn malformed_policies_are_refused_with_their_position() {
    let broker = Broker::start();
    assert_eq!(admin(&broker, "AirlockIAM.CreateUser", json!({"UserName": "eve"})).0, 200);
    let put = |doc: &str| {
        admin(
            &broker,
            "AirlockIAM.PutUserPolicy",
            json!({"UserName": "eve", "PolicyName": "p", "PolicyDocument": doc}),
        )
    };
    let (s, v) = put("{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\"Effect\": \"Allow\" \"Action\": \"*\"}]}");
    assert_eq!((s, v["__type"].as_str()), (400, Some("MalformedPolicyDocument")));
    assert!(v["message"].as_str().unwrap().contains("line 4"), "{v}");
    for (doc, needle) in [
        (r#"{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}"#, "Maybe"),
        (r#"{"Statement":{"Effect":"Allow","Action":"nope:Do","Resource":"*"}}"#, "nope"),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringSorta":{"a":"b"}}}}"#,
            "StringSorta",
        ),
    ] {
        let (_, v) = put(doc);
        assert_eq!(v["__type"], "MalformedPolicyDocument", "{doc}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
}

#[test]
fn deactivated_keys_and_temporary_credentials() {
    let broker = Broker::start();
    let (kid, secret) = user(
        &broker,
        "carol",
        json!({"Statement": [
        {"Effect": "Allow", "Action": ["ssm:DescribeSessions", "sts:AssumeRole"], "Resource": "*"}]}),
    );
    let describe = |k: &str, s: &str| {
        broker.raw_call("AmazonSSM.DescribeSessions", r#"{"State":"Active"}"#, k, s, SystemTime::now())
    };
    assert_eq!(describe(&kid, &secret).0, 200);
    admin(
        &broker,
        "AirlockIAM.UpdateAccessKey",
        json!({"UserName": "carol", "AccessKeyId": kid, "Status": "Inactive"}),
    );
    assert_eq!(describe(&kid, &secret).1["__type"], "UnrecognizedClientException");
    admin(
        &broker,
        "AirlockIAM.UpdateAccessKey",
        json!({"UserName": "carol", "AccessKeyId": kid, "Status": "Active"}),
    );
    assert_eq!(describe(&kid, &secret).0, 200);

    // A role with its own, narrower rights.
    admin(&broker, "AirlockIAM.CreateRole", json!({"RoleName": "reader"}));
    admin(
        &broker,
        "AirlockIAM.PutRolePolicy",
        json!({"RoleName": "reader", "PolicyName": "r",
        "PolicyDocument": r#"{"Statement":{"Effect":"Allow","Action":"ssm:DescribeSessions","Resource":"*"}}"#}),
    );
    let role_arn = format!("arn:airlock:iam::{}:role/reader", account(&broker));
    let (s, v) = broker.raw_call(
        "AirlockSTS.AssumeRole",
        &json!({"RoleArn": role_arn, "RoleSessionName": "carol-ops", "DurationSeconds": 900}).to_string(),
        &kid,
        &secret,
        SystemTime::now(),
    );
    assert_eq!(s, 200, "{v}");
    let c = &v["Credentials"];
    let (tid, tsecret, token) = (
        c["AccessKeyId"].as_str().unwrap(),
        c["SecretAccessKey"].as_str().unwrap(),
        c["SessionToken"].as_str().unwrap(),
    );
    assert!(tid.starts_with("ASIA"));
    let with_token =
        |op: &str, body: &str, token: &str| broker.raw_call_with_token(op, body, tid, tsecret, Some(token));
    assert_eq!(with_token("AmazonSSM.DescribeSessions", r#"{"State":"Active"}"#, token).0, 200);
    let (_, v) = with_token("AmazonSSM.CreateActivation", r#"{"IamRole":"x"}"#, token);
    assert_eq!(v["__type"], "AccessDeniedException");
    assert!(v["message"].as_str().unwrap().contains("assumed-role/reader/carol-ops"), "{v}");
    assert_eq!(
        with_token("AmazonSSM.DescribeSessions", r#"{"State":"Active"}"#, "forged").1["__type"],
        "UnrecognizedClientException"
    );
    // Without its token the temporary key is nothing.
    assert_eq!(describe(tid, tsecret).1["__type"], "UnrecognizedClientException");

    // Expired temporary credentials, written straight into the store with the broker's key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use airlock_broker::store::{IamStore, KeyRecord, SqliteStore};
        use sha2::Digest;
        let master = airlock_broker::secrets::MasterKey::load_or_create(&broker.data_dir()).unwrap();
        let store = SqliteStore::open(&broker.data_dir().join("airlock.db")).await.unwrap();
        store
            .insert_key(&KeyRecord {
                access_key_id: "ASIAEXPIREDEXPIRED00".into(),
                principal: "reader".into(),
                secret_sealed: master.seal("expired-secret").unwrap(),
                active: true,
                created_us: 0,
                expires_us: Some(airlock_broker::app::now_us() - 1),
                token_hash: Some(hex::encode(sha2::Sha256::digest(b"expired-token"))),
                session_name: Some("old".into()),
            })
            .await
            .unwrap();
    });
    let (s, v) = broker.raw_call_with_token(
        "AmazonSSM.DescribeSessions",
        r#"{"State":"Active"}"#,
        "ASIAEXPIREDEXPIRED00",
        "expired-secret",
        Some("expired-token"),
    );
    assert_eq!((s, v["__type"].as_str()), (400, Some("ExpiredTokenException")), "{v}");

    // Secrets are sealed at rest.
    let db = std::fs::read(broker.data_dir().join("airlock.db")).unwrap();
    let wal = std::fs::read(broker.data_dir().join("airlock.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is stored in the clear"
        );
    }
}

#[test]
fn a_policy_can_allow_one_forwarded_port_only() {
    let broker = Broker::start();
    let agent = broker.agent("a");
    let (kid, secret) = user(
        &broker,
        "pat",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ssm:StartSession", "Resource": "arn:airlock:ssm:*:*:managed-instance/*"},
        {"Effect": "Allow", "Action": "ssm:StartSession",
         "Resource": "arn:airlock:ssm:*::document/AWS-StartPortForwardingSession",
         "Condition": {"ForAllValues:StringEquals": {"ssm:DocumentParameters/portNumber": ["5432"]}}}]}),
    );
    let start = |doc: &str, port: &str| {
        let body =
            json!({"Target": agent.instance_id, "DocumentName": doc, "Parameters": {"portNumber": [port]}});
        broker.raw_call("AmazonSSM.StartSession", &body.to_string(), &kid, &secret, SystemTime::now())
    };
    assert_eq!(start("AWS-StartPortForwardingSession", "5432").0, 200);
    assert_eq!(start("AWS-StartPortForwardingSession", "22").1["__type"], "AccessDeniedException");
    assert_eq!(
        start("SSM-SessionManagerRunShell", "5432").1["__type"],
        "AccessDeniedException",
        "tunnels, not shells"
    );
}
