//! Micro-benchmark: `cargo test --release -p airlock-broker --lib policy -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use super::super::{evaluate, Context, Policy, Request};

/// Three policies, ten statements: tag conditions, variables, IP and MFA guardrails.
const POLICIES: [&str; 3] = [
    r#"{"Version":"2012-10-17","Statement":[
      {"Sid":"StartTagged","Effect":"Allow","Action":"ssm:StartSession",
       "Resource":["arn:airlock:ssm:*:111122223333:managed-instance/*","arn:airlock:ec2:*:111122223333:instance/*"],
       "Condition":{"StringEquals":{"ssm:resourceTag/Environment":["dev","staging"]},"StringLike":{"ssm:resourceTag/Team":"${aws:PrincipalTag/team}*"}}},
      {"Sid":"Documents","Effect":"Allow","Action":"ssm:StartSession",
       "Resource":["arn:airlock:ssm:*::document/AWS-StartSSHSession","arn:airlock:ssm:*:111122223333:document/SSM-SessionManagerRunShell"],
       "Condition":{"BoolIfExists":{"ssm:SessionDocumentAccessCheck":"true"}}},
      {"Sid":"OwnSessions","Effect":"Allow","Action":["ssm:TerminateSession","ssm:ResumeSession"],
       "Resource":"arn:airlock:ssm:*:*:session/${aws:username}-*"},
      {"Sid":"Listing","Effect":"Allow","Action":["ssm:Describe*","ssm:GetConnectionStatus"],"Resource":"*"}]}"#,
    r#"{"Version":"2012-10-17","Statement":[
      {"Sid":"NoProd","Effect":"Deny","Action":"ssm:StartSession","Resource":"*",
       "Condition":{"StringEqualsIgnoreCase":{"ssm:resourceTag/Environment":"prod"}}},
      {"Sid":"RequireMfa","Effect":"Deny","NotAction":["ssm:Describe*","ssm:GetConnectionStatus"],"Resource":"*",
       "Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}},
      {"Sid":"CorpNetwork","Effect":"Deny","Action":"*","Resource":"*",
       "Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}}]}"#,
    r#"{"Version":"2012-10-17","Statement":[
      {"Sid":"BreakGlass","Effect":"Allow","Action":"ssm:*","Resource":"*",
       "Condition":{"StringEquals":{"aws:PrincipalTag/role":"sre"},"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}},
      {"Sid":"AgentChannels","Effect":"Allow","Action":"ssmmessages:*","Resource":"*"},
      {"Sid":"Window","Effect":"Deny","Action":"ssm:CreateActivation","Resource":"*",
       "Condition":{"DateGreaterThan":{"aws:CurrentTime":"2027-01-01T00:00:00Z"}}}]}"#,
];

#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn bench_decisions() {
    let policies: Vec<Policy> =
        POLICIES.iter().enumerate().map(|(i, d)| Policy::parse(&format!("p{i}"), d).unwrap()).collect();
    let statements: usize = policies.iter().map(Policy::statement_count).sum();
    let mut ctx = Context::new();
    ctx.insert("aws:username", "alice")
        .insert("aws:userid", "AIDAALICE")
        .insert("aws:PrincipalTag/team", "web")
        .insert("aws:PrincipalTag/role", "dev")
        .insert("aws:MultiFactorAuthPresent", "true")
        .insert("aws:MultiFactorAuthAge", "120")
        .insert("aws:SourceIp", "10.20.30.40")
        .insert("aws:CurrentTime", "2026-11-05T10:00:00Z")
        .insert("ssm:resourceTag/Environment", "dev")
        .insert("ssm:resourceTag/Team", "web-frontend");
    let requests = [
        (
            "ssm:StartSession",
            "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-0123456789abcdef0",
            true,
        ),
        ("ssm:StartSession", "arn:airlock:ssm:eu-west-1::document/AWS-StartSSHSession", true),
        ("ssm:TerminateSession", "arn:airlock:ssm:eu-west-1:111122223333:session/alice-0a1b2c3d4e", true),
        ("ssm:ResumeSession", "arn:airlock:ssm:eu-west-1:111122223333:session/bob-0a1b2c3d4e", false),
        ("ssm:DescribeSessions", "*", true),
        ("ssm:CreateActivation", "*", false),
    ];
    for (action, resource, allowed) in requests {
        let d = evaluate(&policies, &Request { action, resource, context: &ctx });
        assert_eq!(d.is_allowed(), allowed, "{action} {resource}: {d}");
    }
    let rounds = 200_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for (action, resource, _) in requests {
            black_box(evaluate(
                black_box(&policies),
                &Request { action, resource, context: black_box(&ctx) },
            ));
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / (rounds * requests.len()) as f64;
    println!(
        "policy evaluate: {per:.3} µs/decision ({} policies, {statements} statements, {} request kinds)",
        policies.len(),
        requests.len()
    );
    let start = Instant::now();
    for _ in 0..20_000 {
        for doc in POLICIES {
            black_box(Policy::parse("p", black_box(doc)).unwrap());
        }
    }
    println!("policy parse+compile: {:.2} µs/policy", start.elapsed().as_secs_f64() * 1e6 / 60_000.0);
}
