//! Tests of the Gate's refusals: the exact messages and codes for an explicit deny and for
//! no allow, per dialect, and the audit record of each decision.

use super::*;
use crate::identity::tests::{app, user, ACCOUNT};

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"All","Effect":"Allow","Action":["ssm:*","iam:*"],"Resource":"*"},
  {"Sid":"NoTerminate","Effect":"Deny","Action":["ssm:TerminateSession","iam:DeleteUser"],"Resource":"*"}]}"#;

async fn refusal(gate: &Gate<'_>, action: &str, service: Service) -> (u16, &'static str, String) {
    let e = gate.decide(&gate.context(), action, "arn:x", service, false).await.unwrap_err();
    (e.status.as_u16(), e.code, e.message)
}

fn facts() -> RequestFacts {
    RequestFacts {
        source_ip: "127.0.0.1".parse().unwrap(),
        secure: true,
        region: "us-east-1".into(),
        console: None,
    }
}

#[tokio::test]
async fn refusals_say_which_rule_refused() {
    let t = app().await;
    let app = &t.app;
    let caller = Caller { principal: user(app, "carol", Some(POLICY)).await, role_session: None };
    let facts = facts();
    let gate = Gate { app, caller: &caller, facts: &facts };
    let arn = format!("arn:airlock:iam::{ACCOUNT}:user/carol");

    assert!(gate.decide(&gate.context(), "ssm:StartSession", "arn:x", Service::Ssm, false).await.is_ok());
    assert_eq!(
        refusal(&gate, "ssm:TerminateSession", Service::Ssm).await,
        (
            400,
            "AccessDeniedException",
            format!(
                "User: {arn} is not authorized to perform: ssm:TerminateSession on resource: arn:x \
                 with an explicit deny in an identity-based policy"
            )
        )
    );
    assert_eq!(
        refusal(&gate, "ec2:RunInstances", Service::Ssm).await,
        (
            400,
            "AccessDeniedException",
            format!(
                "User: {arn} is not authorized to perform: ec2:RunInstances on resource: arn:x \
                 because no identity-based policy allows the ec2:RunInstances action"
            )
        )
    );
    let (_, code, message) = refusal(&gate, "iam:DeleteUser", Service::Iam).await;
    assert_eq!(code, "AccessDenied");
    assert!(message.ends_with("with an explicit deny in an identity-based policy"), "{message}");
    let (_, code, message) = refusal(&gate, "sts:GetCallerIdentity", Service::Iam).await;
    assert_eq!(code, "AccessDenied");
    assert!(message.ends_with("because no identity-based policy allows the sts:GetCallerIdentity action"));
}

#[tokio::test]
async fn audited_decisions_are_recorded_with_their_statement() {
    let t = app().await;
    let app = &t.app;
    let caller = Caller { principal: user(app, "carol", Some(POLICY)).await, role_session: None };
    let facts = facts();
    let gate = Gate { app, caller: &caller, facts: &facts };
    let ctx = gate.context();
    gate.decide(&ctx, "ssm:StartSession", "arn:a", Service::Ssm, true).await.unwrap();
    gate.decide(&ctx, "ssm:TerminateSession", "arn:b", Service::Ssm, true).await.unwrap_err();
    gate.decide(&ctx, "ec2:RunInstances", "arn:c", Service::Ssm, true).await.unwrap_err();
    gate.decide(&ctx, "ssm:StartSession", "arn:d", Service::Ssm, false).await.unwrap();
    let mut events = app.store.audit_events(10, 0).await.unwrap();
    events.sort_by(|a, b| a.resource.cmp(&b.resource));
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.resource.as_str(),
                e.decision.as_str(),
                e.policy.as_deref(),
                e.sid.as_deref(),
                e.statement_index,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("arn:a", "allowed", Some("inline"), Some("All"), Some(0)),
            ("arn:b", "explicitDeny", Some("inline"), Some("NoTerminate"), Some(1)),
            ("arn:c", "implicitDeny", None, None, None),
        ]
    );
    assert!(events.iter().all(|e| e.principal.ends_with(":user/carol") && e.source_ip == "127.0.0.1"));
}

#[tokio::test]
async fn the_context_carries_the_caller_and_request_facts() {
    let t = app().await;
    let app = &t.app;
    let caller = Caller { principal: user(app, "carol", None).await, role_session: None };
    let facts = facts();
    let ctx = Gate { app, caller: &caller, facts: &facts }.context();
    let one = |k: &str| ctx.get(k).map(|v| v.join(","));
    assert_eq!(one("aws:username").as_deref(), Some("carol"));
    assert_eq!(one("aws:PrincipalAccount").as_deref(), Some(ACCOUNT));
    assert_eq!(one("aws:SourceIp").as_deref(), Some("127.0.0.1"));
    assert_eq!(one("aws:SecureTransport").as_deref(), Some("true"));
    assert_eq!(one("aws:RequestedRegion").as_deref(), Some("us-east-1"));
    assert_eq!(one("aws:MultiFactorAuthPresent"), None);
    let session = Caller { role_session: Some("ops".into()), ..caller };
    let ctx = Gate { app, caller: &session, facts: &facts }.context();
    assert_eq!(ctx.get("aws:MultiFactorAuthPresent").map(|v| v.join(",")).as_deref(), Some("false"));
    assert_eq!(ctx.get("aws:username"), None);
    // A role session's principal ARN is its role's, not the session's, as in AWS.
    assert_eq!(ctx.get("aws:PrincipalArn").map(|v| v.join(",")), Some(session.principal.arn.clone()));
}

#[tokio::test]
async fn console_sessions_carry_mfa_presence_and_age() {
    let t = app().await;
    let app = &t.app;
    let caller = Caller { principal: user(app, "carol", None).await, role_session: None };
    let get = |facts: &RequestFacts, k: &str| {
        Gate { app, caller: &caller, facts }.context().get(k).map(|v| v.join(","))
    };
    let without = RequestFacts { console: Some(ConsoleAuth { mfa_at_us: None }), ..facts() };
    assert_eq!(get(&without, "aws:MultiFactorAuthPresent").as_deref(), Some("false"));
    assert_eq!(get(&without, "aws:MultiFactorAuthAge"), None);
    let at_us = crate::app::now_us() - 125_000_000;
    let with = RequestFacts { console: Some(ConsoleAuth { mfa_at_us: Some(at_us) }), ..facts() };
    assert_eq!(get(&with, "aws:MultiFactorAuthPresent").as_deref(), Some("true"));
    let age: i64 = get(&with, "aws:MultiFactorAuthAge").unwrap().parse().unwrap();
    assert!((125..=135).contains(&age), "{age}");
    // A policy that wants MFA within the hour, through the real evaluator.
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:*","Resource":"*",
      "Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"},"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}}]}"#;
    let mfa_user = Caller { principal: user(app, "dave", Some(doc)).await, role_session: None };
    async fn allowed(app: &App, caller: &Caller, facts: &RequestFacts) -> bool {
        let gate = Gate { app, caller, facts };
        gate.decide(&gate.context(), "ssm:StartSession", "arn:x", Service::Ssm, false).await.is_ok()
    }
    assert!(allowed(app, &mfa_user, &with).await);
    assert!(!allowed(app, &mfa_user, &without).await);
    assert!(!allowed(app, &mfa_user, &facts()).await, "signed requests carry no MFA");
    let stale =
        RequestFacts { console: Some(ConsoleAuth { mfa_at_us: Some(at_us - 3_600_000_000) }), ..facts() };
    assert!(!allowed(app, &mfa_user, &stale).await, "MFA older than the hour");
}
