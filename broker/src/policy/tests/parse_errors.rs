//! Parser tests: grammar accepted, faults rejected with their position or offending value.

use super::super::{Policy, PolicyError};

fn err(doc: &str) -> PolicyError {
    match Policy::parse("t", doc) {
        Ok(_) => panic!("accepted: {doc}"),
        Err(e) => e,
    }
}

/// A one-statement policy with the given statement body.
fn stmt(body: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{{{body}}}]}}"#)
}

fn with_condition(cond: &str) -> String {
    stmt(&format!(r#""Effect":"Allow","Action":"ssm:StartSession","Resource":"*","Condition":{cond}"#))
}

#[test]
fn malformed_json_reports_line_and_column() {
    let doc = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {\"Effect\": \"Allow\",, \"Action\": \"*\"}\n  ]\n}";
    match err(doc) {
        PolicyError::Json { line, column, message } => {
            assert_eq!((line, column), (4, 24), "{message}");
            assert!(!message.contains("at line"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let shown = err(doc).to_string();
    assert!(shown.contains("line 4, column 24"), "{shown}");
}

#[test]
fn truncated_trailing_and_empty_input_report_positions() {
    assert!(matches!(
        err("{\"Version\": \"2012-10-17\",\n\"Statement\": ["),
        PolicyError::Json { line: 2, .. }
    ));
    assert!(matches!(err("{}\n{}"), PolicyError::Json { line: 2, column: 1, .. }));
    assert!(matches!(err(""), PolicyError::Json { line: 1, .. }));
    assert!(matches!(err("{\"Version\": 2012-10-17}"), PolicyError::Json { line: 1, .. }));
}

#[test]
fn duplicate_member_is_a_json_fault_with_position() {
    let doc = "{\"Statement\": {\n \"Effect\": \"Allow\",\n \"Effect\": \"Deny\", \"Action\": \"*\", \"Resource\": \"*\"}}";
    match err(doc) {
        PolicyError::Json { line, message, .. } => {
            assert_eq!(line, 3);
            assert!(message.contains("duplicate member `Effect`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let many: String = (0..40).map(|i| format!("\"k{i}\":1,")).collect();
    let doc = format!(
        r#"{{"Statement":{{"Effect":"Allow","Action":"*","Resource":"*","Condition":{{"NumericEquals":{{{many}"k7":2}}}}}}}}"#
    );
    assert!(err(&doc).to_string().contains("duplicate member `k7`"));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let doc = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(err(&doc), PolicyError::Json { .. }));
}

#[test]
fn every_prefix_of_a_valid_policy_is_handled() {
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":["ssm:Start*"],
        "Resource":"arn:airlock:ssm:*:*:session/${aws:username, 'x'}-*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#;
    assert!(Policy::parse("ok", doc).is_ok());
    for end in (0..doc.len()).filter(|&i| doc.is_char_boundary(i)) {
        assert!(Policy::parse("prefix", &doc[..end]).is_err(), "prefix {end} accepted");
    }
}

#[test]
fn unknown_members_are_named() {
    let e = err(r#"{"Version":"2012-10-17","Statements":[]}"#);
    assert!(matches!(&e, PolicyError::UnknownMember { member, .. } if member == "Statements"), "{e:?}");
    let e = err(&stmt(r#""Effect":"Allow","Actions":"ssm:StartSession","Resource":"*""#));
    assert!(e.to_string().contains("Statement[0]: unknown member `Actions`"), "{e}");
    let e = err(&stmt(r#""Effect":"Allow","Principal":"*","Action":"*","Resource":"*""#));
    assert!(e.to_string().contains("`Principal`") && e.to_string().contains("identity policies"), "{e}");
}

#[test]
fn effect_must_be_exactly_allow_or_deny() {
    for bad in ["allow", "Permit", "DENY", ""] {
        let e = err(&stmt(&format!(r#""Effect":"{bad}","Action":"*","Resource":"*""#)));
        assert!(matches!(&e, PolicyError::Effect { value, .. } if value == bad), "{e:?}");
        assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
    }
    assert!(matches!(
        err(&stmt(r#""Effect":true,"Action":"*","Resource":"*""#)),
        PolicyError::WrongType { .. }
    ));
    assert!(err(&stmt(r#""Action":"*","Resource":"*""#)).to_string().contains("missing Effect"));
}

#[test]
fn unknown_condition_operator_is_named() {
    let e = err(&with_condition(r#"{"StringEqual":{"aws:username":"a"}}"#));
    assert!(matches!(&e, PolicyError::Operator { operator, .. } if operator == "StringEqual"), "{e:?}");
    assert!(e.to_string().contains("`StringEqual`"));
    let e = err(&with_condition(r#"{"stringEquals":{"aws:username":"a"}}"#));
    assert!(e.to_string().contains("did you mean `StringEquals`"), "{e}");
    for bad in [
        "NullIfExists",
        "ForAllValues:Null",
        "ForSomeValues:StringEquals",
        "StringEqualsIfExistsIfExists",
        "IfExists",
    ] {
        let e = err(&with_condition(&format!(r#"{{"{bad}":{{"k":"true"}}}}"#)));
        assert!(matches!(&e, PolicyError::Operator { operator, .. } if operator == bad), "{bad}: {e:?}");
    }
}

#[test]
fn every_documented_operator_is_accepted() {
    let ops = [
        ("StringEquals", "a"),
        ("StringNotEquals", "a"),
        ("StringEqualsIgnoreCase", "a"),
        ("StringNotEqualsIgnoreCase", "a"),
        ("StringLike", "a*"),
        ("StringNotLike", "a?"),
        ("NumericEquals", "1"),
        ("NumericNotEquals", "1"),
        ("NumericLessThan", "1"),
        ("NumericLessThanEquals", "1"),
        ("NumericGreaterThan", "1"),
        ("NumericGreaterThanEquals", "1.5"),
        ("DateEquals", "2026-01-01"),
        ("DateNotEquals", "2026-01-01T00:00:00Z"),
        ("DateLessThan", "1700000000"),
        ("DateLessThanEquals", "2026-01-01"),
        ("DateGreaterThan", "2026-01-01"),
        ("DateGreaterThanEquals", "2026-01-01"),
        ("Bool", "true"),
        ("IpAddress", "10.0.0.0/8"),
        ("NotIpAddress", "::1"),
        ("ArnEquals", "*"),
        ("ArnLike", "arn:a:b:c:d:e"),
        ("ArnNotEquals", "arn:a:b:c:d:e"),
        ("ArnNotLike", "arn:a:b:c:d:e"),
        ("BinaryEquals", "AAEC"),
    ];
    for (op, v) in ops {
        for name in [
            op.to_string(),
            format!("{op}IfExists"),
            format!("ForAllValues:{op}"),
            format!("ForAnyValue:{op}IfExists"),
        ] {
            let doc = with_condition(&format!(r#"{{"{name}":{{"k":"{v}"}}}}"#));
            assert!(Policy::parse("t", &doc).is_ok(), "{name}: {:?}", Policy::parse("t", &doc).err());
        }
    }
    assert!(Policy::parse("t", &with_condition(r#"{"Null":{"k":"false"}}"#)).is_ok());
}

#[test]
fn actions_need_a_known_service_prefix() {
    let cases = [
        ("StartSession", "needs a `service:` prefix"),
        ("ssn:StartSession", "unknown service prefix `ssn`"),
        ("*:StartSession", "unknown service prefix `*`"),
        ("ssm:", "empty action name"),
        ("ssm:Start Session", "character ` `"),
        ("ssm:Start:Session", "character `:`"),
    ];
    for (action, message) in cases {
        let e = err(&stmt(&format!(
            r#""Effect":"Allow","Action":["ssm:GetDocument","{action}"],"Resource":"*""#
        )));
        assert!(matches!(&e, PolicyError::Action { action: a, .. } if a == action), "{action}: {e:?}");
        let shown = e.to_string();
        assert!(shown.contains(message) && shown.contains("Statement[0].Action[1]"), "{shown}");
    }
    for ok in [
        "*",
        "SSM:startsession",
        "ssmmessages:Open*",
        "airlock:*",
        "sts:AssumeRole",
        "ec2:Describe?nstances",
        "logs:*",
        "s3:Get*",
        "kms:Decrypt",
        "iam:PassRole",
    ] {
        assert!(
            Policy::parse("t", &stmt(&format!(r#""Effect":"Allow","Action":"{ok}","Resource":"*""#))).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn action_and_resource_exclusivity() {
    let both = err(&stmt(r#""Effect":"Allow","Action":"*","NotAction":"ssm:X","Resource":"*""#));
    assert!(both.to_string().contains("both Action and NotAction"), "{both}");
    let neither = err(&stmt(r#""Effect":"Allow","Resource":"*""#));
    assert!(neither.to_string().contains("needs Action or NotAction"), "{neither}");
    let both = err(&stmt(r#""Effect":"Allow","Action":"*","Resource":"*","NotResource":"*""#));
    assert!(both.to_string().contains("both Resource and NotResource"), "{both}");
    let neither = err(&stmt(r#""Effect":"Allow","Action":"*""#));
    assert!(neither.to_string().contains("needs Resource or NotResource"), "{neither}");
}

#[test]
fn structural_faults() {
    assert!(
        matches!(err(r#"{"Version":"2012-10-18","Statement":[]}"#), PolicyError::Version(v) if v == "2012-10-18")
    );
    assert!(matches!(err(r#"{"Version":2012,"Statement":[]}"#), PolicyError::WrongType { .. }));
    assert!(err(r#"{"Version":"2012-10-17"}"#).to_string().contains("missing Statement"));
    assert!(err(r#"{"Version":"2012-10-17","Statement":[]}"#).to_string().contains("at least one statement"));
    assert!(matches!(err(r#"{"Statement":"x"}"#), PolicyError::WrongType { .. }));
    assert!(matches!(err(r#"[{"Statement":[]}]"#), PolicyError::WrongType { .. }));
    assert!(matches!(err(r#"{"Id":5,"Statement":[]}"#), PolicyError::WrongType { .. }));
    assert!(matches!(err(r#"{"Statement":[5]}"#), PolicyError::WrongType { .. }));
    let e = err(&stmt(r#""Effect":"Allow","Action":[],"Resource":"*""#));
    assert!(e.to_string().contains("Statement[0].Action: must not be an empty list"), "{e}");
    let e = err(&stmt(r#""Effect":"Allow","Action":["ssm:X", 5],"Resource":"*""#));
    assert!(e.to_string().contains("Statement[0].Action[1]: expected a string"), "{e}");
    let e = err(&stmt(r#""Sid":7,"Effect":"Allow","Action":"*","Resource":"*""#));
    assert!(matches!(e, PolicyError::WrongType { .. }));
    let dup = r#"{"Statement":[{"Sid":"A","Effect":"Allow","Action":"*","Resource":"*"},{"Sid":"A","Effect":"Deny","Action":"*","Resource":"*"}]}"#;
    assert!(err(dup).to_string().contains("duplicate Sid `A`"));
}

#[test]
fn resources_must_be_star_or_six_part_arns() {
    for bad in [
        "mi-123",
        "arn:airlock:ssm:eu-west-1:111122223333",
        "",
        "arn*",
        "arn:aws:ssm:*x",
        "arn:aws:ssm:",
        "arn:aws:ssm:${aws:username}",
        "arn:aws:ssm:${*}",
    ] {
        let e = err(&stmt(&format!(r#""Effect":"Allow","Action":"*","Resource":"{bad}""#)));
        assert!(matches!(&e, PolicyError::Resource { resource, .. } if resource == bad), "{bad}: {e:?}");
    }
    for ok in [
        "*",
        "arn:airlock:ssm:*:*:*",
        "arn:airlock:s3:::bucket/*",
        "arn:airlock:logs:r:a:log-group:x:*",
        "arn:aws:ssm:*",
        "arn:*",
        "arn:aws:ssm:eu-*",
        "arn:aws:ssm:eu-west-1:1111*",
        "arn:aws:ssm:${aws:username}*",
    ] {
        assert!(
            Policy::parse("t", &stmt(&format!(r#""Effect":"Allow","Action":"*","NotResource":"{ok}""#)))
                .is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn condition_values_are_checked_for_their_operator() {
    let cases = [
        ("NumericEquals", "ten"),
        ("NumericLessThan", "1e999"),
        ("DateLessThan", "tomorrow"),
        ("IpAddress", "10.0.0.0/33"),
        ("NotIpAddress", "10.0.0"),
        ("Bool", "yes"),
        ("Null", "maybe"),
        ("BinaryEquals", "!!"),
        ("ArnLike", "arn:bad"),
    ];
    for (op, value) in cases {
        let e = err(&with_condition(&format!(r#"{{"{op}":{{"k":"{value}"}}}}"#)));
        assert!(
            matches!(&e, PolicyError::Value { value: v, operator, .. } if v == value && operator == op),
            "{op}: {e:?}"
        );
        assert!(e.to_string().contains(&format!("`{value}`")), "{e}");
    }
    assert!(matches!(err(&with_condition(r#"{"StringEquals":{"k":null}}"#)), PolicyError::WrongType { .. }));
    assert!(matches!(
        err(&with_condition(r#"{"StringEquals":{"k":{"a":1}}}"#)),
        PolicyError::WrongType { .. }
    ));
    assert!(matches!(
        err(&with_condition(r#"{"StringEquals":{"k":[["a"]]}}"#)),
        PolicyError::WrongType { .. }
    ));
    assert!(err(&with_condition(r#"{"StringEquals":{"k":[]}}"#))
        .to_string()
        .contains("empty list of values"));
    assert!(err(&with_condition(r#"{"StringEquals":{}}"#)).to_string().contains("names no condition key"));
    assert!(matches!(err(&with_condition(r#"{"StringEquals":"k"}"#)), PolicyError::WrongType { .. }));
    assert!(matches!(err(&with_condition(r#"["StringEquals"]"#)), PolicyError::WrongType { .. }));
    assert!(err(&with_condition(r#"{"StringEquals":{"":"a"}}"#)).to_string().contains("empty condition key"));
}

#[test]
fn malformed_variables_are_rejected_only_in_2012_documents() {
    for bad in [
        "${aws:username",
        "${}",
        "${aws:username, default}",
        "${aws:username, 'x'",
        "${a b}",
        "${aws:username, 'x' y}",
    ] {
        let resource = format!("arn:airlock:ssm:*:*:session/{bad}");
        let e = err(&stmt(&format!(r#""Effect":"Allow","Action":"*","Resource":"{resource}""#)));
        assert!(matches!(&e, PolicyError::Variable { text, .. } if *text == resource), "{bad}: {e:?}");
        let e = err(&with_condition(&format!(r#"{{"StringLike":{{"k":"{bad}"}}}}"#)));
        assert!(matches!(e, PolicyError::Variable { .. }), "{bad}");
        let old = format!(r#"{{"Statement":{{"Effect":"Allow","Action":"*","Resource":"{resource}"}}}}"#);
        assert!(Policy::parse("t", &old).is_ok(), "2008 reads {bad} literally");
    }
}

#[test]
fn accepted_documents_expose_their_metadata() {
    let p = Policy::parse(
        "dev",
        r#"{"Version":"2012-10-17","Id":"doc-1","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#,
    )
    .unwrap();
    assert_eq!((p.name(), p.id(), p.statement_count(), p.uses_variables()), ("dev", Some("doc-1"), 1, true));
    let p = Policy::parse("old", r#"{"Statement":[{"Effect":"Deny","Action":"*","Resource":"*"},{"Effect":"Allow","Action":"*","Resource":"*"}]}"#).unwrap();
    assert_eq!((p.id(), p.statement_count(), p.uses_variables()), (None, 2, false));
}
