//! Property tests of the policy parser and evaluator: arbitrary text and near-valid
//! documents are refused with an error or compile and evaluate, never panic. `PROPTEST_CASES`
//! raises the case count (default 256) for longer runs.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::super::{evaluate, Context, Policy, Request};

/// Strings close to what policies hold, plus arbitrary text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("ssm:StartSession".to_owned()),
        Just("ssm:*Session".to_owned()),
        Just("iam:?et*".to_owned()),
        Just("arn:airlock:ssm:*".to_owned()),
        Just("arn:airlock:ssm:eu-*:1:session/${aws:username}-*".to_owned()),
        Just("arn:airlock:ssm:::".to_owned()),
        Just("${aws:username, 'x''y'}".to_owned()),
        Just("${".to_owned()),
        Just("${*}${?}${$}".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("2026-01-01T00:00:00Z".to_owned()),
        Just("1e3".to_owned()),
        "[ -~]{0,24}",
        "[*?:${}',a-z]{0,24}",
        "\\PC{0,12}",
    ]
}

/// A JSON value of a shape policies use: a string, a list of them, or something wrong.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(Value::from),
        3 => prop::collection::vec(text(), 0..4).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(json!({})),
    ]
}

fn operator() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("StringEquals"),
        Just("StringNotLike"),
        Just("StringEqualsIgnoreCase"),
        Just("NumericLessThanEquals"),
        Just("DateGreaterThan"),
        Just("Bool"),
        Just("IpAddress"),
        Just("NotIpAddress"),
        Just("ArnLike"),
        Just("ArnNotEquals"),
        Just("BinaryEquals"),
        Just("Null"),
        Just("Nonsense"),
    ];
    let prefix = prop_oneof![Just(""), Just("ForAnyValue:"), Just("ForAllValues:"), Just("ForSome:")];
    let suffix = prop_oneof![Just(""), Just("IfExists")];
    (prefix, base, suffix).prop_map(|(p, b, s)| format!("{p}{b}{s}"))
}

fn condition() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("aws:username".to_owned()),
        Just("aws:SourceIp".to_owned()),
        Just("aws:TagKeys".to_owned()),
        Just("ssm:resourceTag/team".to_owned()),
        text(),
    ];
    let block = prop::collection::btree_map(key, value(), 0..3).prop_map(|m| json!(m));
    prop::collection::btree_map(operator(), block, 0..3).prop_map(|m| json!(m))
}

fn statement() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        Just("Sid"),
        Just("Effect"),
        Just("Action"),
        Just("NotAction"),
        Just("Resource"),
        Just("NotResource"),
        Just("Principal"),
        Just("Bogus"),
    ];
    let effect = prop_oneof![Just(json!("Allow")), Just(json!("Deny")), value()];
    (prop::collection::btree_map(member, value(), 0..5), effect, prop::option::of(condition())).prop_map(
        |(members, effect, cond)| {
            let mut st = serde_json::Map::new();
            st.insert("Effect".into(), effect);
            for (k, v) in members {
                st.insert(k.into(), v);
            }
            if let Some(c) = cond {
                st.insert("Condition".into(), c);
            }
            Value::Object(st)
        },
    )
}

fn document() -> impl Strategy<Value = String> {
    let version = prop_oneof![Just(json!("2012-10-17")), Just(json!("2008-10-17")), value()];
    let statements = prop_oneof![
        3 => prop::collection::vec(statement(), 0..4).prop_map(Value::from),
        1 => statement(),
        1 => value(),
    ];
    (prop::option::of(version), statements).prop_map(|(version, statements)| {
        let mut doc = serde_json::Map::new();
        if let Some(v) = version {
            doc.insert("Version".into(), v);
        }
        doc.insert("Statement".into(), statements);
        Value::Object(doc).to_string()
    })
}

/// Evaluates a compiled policy on a few requests built from the same fragments.
fn evaluate_some(policy: Policy, action: &str, resource: &str, username: &str) {
    let mut ctx = Context::new();
    ctx.insert("aws:username", username)
        .insert("aws:SourceIp", "10.1.2.3")
        .insert_multi("aws:TagKeys", ["a", "b"]);
    let policies = [policy];
    for (action, resource) in [(action, resource), ("ssm:StartSession", "arn:airlock:ssm:eu-west-1:1:x")] {
        let d = evaluate(&policies, &Request { action, resource, context: &ctx });
        let _ = d.to_string();
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Policy::parse("p", &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn near_valid_documents_compile_or_are_refused(
        doc in document(),
        action in text(),
        resource in text(),
        username in text(),
    ) {
        if let Ok(policy) = Policy::parse("p", &doc) {
            evaluate_some(policy, &action, &resource, &username);
        }
    }

    #[test]
    fn deep_nesting_is_an_error(depth in 0usize..4_000, open in prop_oneof![Just("["), Just("{\"a\":")]) {
        let doc = format!(r#"{{"Statement":{}"#, open.repeat(depth));
        prop_assert!(Policy::parse("p", &doc).is_err());
    }
}

/// Documents built from valid fragments only: every one must compile.
fn valid_document() -> impl Strategy<Value = String> {
    let action = prop_oneof![Just("*"), Just("ssm:StartSession"), Just("ssm:*Session"), Just("iam:?et*")];
    let resource = prop_oneof![
        Just("*"),
        Just("arn:airlock:ssm:*"),
        Just("arn:airlock:ssm:eu-*:1:session/${aws:username}-*"),
        Just("arn:airlock:s3:::b/*"),
    ];
    let like = "[a-z*?]{0,8}";
    let statement = (any::<bool>(), prop::collection::vec(action, 1..3), resource, prop::option::of(like))
        .prop_map(|(allow, actions, resource, like)| {
            let mut st = json!({"Effect": if allow { "Allow" } else { "Deny" }, "Action": actions, "Resource": resource});
            if let Some(v) = like {
                st["Condition"] = json!({"StringLike": {"aws:username": v}});
            }
            st
        });
    prop::collection::vec(statement, 1..4)
        .prop_map(|st| json!({"Version": "2012-10-17", "Statement": st}).to_string())
}

proptest! {
    #[test]
    fn valid_documents_compile_and_evaluate(doc in valid_document(), action in text(), resource in text()) {
        let policy = Policy::parse("p", &doc);
        prop_assert!(policy.is_ok(), "{doc}: {:?}", policy.err());
        if let Ok(policy) = policy {
            evaluate_some(policy, &action, &resource, "alice");
        }
    }
}
