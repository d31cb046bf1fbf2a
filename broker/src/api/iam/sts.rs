//! AssumeRole (temporary credentials for a role) and SimulatePrincipalPolicy.

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{no_such, principal_arn};
use crate::api::{ApiError, Op};
use crate::app::{now_us, App};
use crate::authz::{decision_name, policies_of, Gate};
use crate::keys;
use crate::policy::{evaluate, Context, Request};
use crate::store::{KeyRecord, PrincipalKind};

/// AssumeRole's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct AssumeRole {
    role_arn: String,
    role_session_name: String,
    duration_seconds: Option<i64>,
}

/// SimulatePrincipalPolicy's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct Simulate {
    policy_source_arn: String,
    action_names: Vec<String>,
    #[serde(default)]
    resource_arns: Vec<String>,
    #[serde(default)]
    context_entries: Vec<ContextEntry>,
}

/// One simulated context key.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ContextEntry {
    context_key_name: String,
    context_key_values: Vec<String>,
    /// Accepted for the AWS CLI's shape; every value is compared as text.
    #[allow(dead_code)]
    context_key_type: Option<String>,
}

/// AssumeRole: issues temporary credentials for a role of this account.
pub(crate) async fn assume_role(gate: &Gate<'_>, req: AssumeRole) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::AssumeRole, &req.role_arn).await?;
    let prefix = format!("arn:airlock:iam::{}:role/", app.settings.account);
    let role_name = req.role_arn.strip_prefix(&prefix).ok_or_else(|| {
        ApiError::bad("ValidationError", format!("{} is not a role of this account", req.role_arn))
    })?;
    let role = app
        .store
        .principal(role_name)
        .await?
        .filter(|p| p.kind == PrincipalKind::Role)
        .ok_or_else(|| no_such("role", role_name))?;
    // The caller's policies allowed it; the role must trust the caller too.
    let trust = super::trust::role_trust(app, &role.name).await?;
    let caller_arn = gate.caller.arn(&app.settings.account);
    let caller_arns = [caller_arn.as_str(), gate.caller.principal.arn.as_str()];
    if !trust.allows(&caller_arns, &role.arn, &gate.context()) {
        tracing::info!(principal = %caller_arn, role = %role.arn, "role trust policy refused AssumeRole");
        return Err(ApiError::bad(
            "AccessDenied",
            format!(
                "User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {} because the \
                 role's trust policy does not allow it",
                role.arn
            ),
        ));
    }
    let session = &req.role_session_name;
    if !(2..=64).contains(&session.len())
        || !session.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        return Err(ApiError::bad(
            "ValidationError",
            "RoleSessionName must be 2 to 64 characters of [A-Za-z0-9+=,.@_-]",
        ));
    }
    let duration = req.duration_seconds.unwrap_or(3600);
    if !(900..=43_200).contains(&duration) {
        return Err(ApiError::bad("ValidationError", "DurationSeconds must be between 900 and 43200"));
    }
    let (id, secret) = (keys::key_id(true), keys::secret());
    let token = keys::random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 96);
    let expires = now_us() + duration * 1_000_000;
    app.store
        .insert_key(&KeyRecord {
            access_key_id: id.clone(),
            principal: role.name.clone(),
            secret_sealed: app.master.seal(&secret).map_err(ApiError::internal)?,
            active: true,
            created_us: now_us(),
            expires_us: Some(expires),
            token_hash: Some(hex::encode(Sha256::digest(token.as_bytes()))),
            session_name: Some(session.clone()),
        })
        .await?;
    let _ = app.store.purge_expired_keys(now_us()).await;
    Ok(json!({
        "Credentials": { "AccessKeyId": id, "SecretAccessKey": secret, "SessionToken": token, "Expiration": expires / 1_000_000 },
        "AssumedRoleUser": {
            "Arn": format!("arn:airlock:sts::{}:assumed-role/{}/{session}", app.settings.account, role.name),
            "AssumedRoleId": format!("{}:{session}", role.principal_id),
        },
    }))
}

/// Evaluates a principal's policies for actions and resources with a given context.
pub(crate) async fn simulate(gate: &Gate<'_>, req: Simulate) -> Result<Value, ApiError> {
    let app = gate.app;
    let source = SimulatedPrincipal::parse(&app.settings.account, &req.policy_source_arn)?;
    // Authorized on the principal whose policies are revealed (a role session's role).
    gate.require(Op::SimulatePrincipalPolicy, &source.authorized_arn(app)).await?;
    let principal = app
        .store
        .principal(source.name())
        .await?
        .filter(|p| p.kind == source.kind())
        .ok_or_else(|| no_such("principal", &req.policy_source_arn))?;
    let policies = policies_of(app, &principal.name).await?;
    let mut ctx = Context::new();
    match &source {
        SimulatedPrincipal::User(_) => {
            ctx.insert("aws:username", principal.name.clone());
            ctx.insert("aws:userid", principal.principal_id.clone());
        }
        SimulatedPrincipal::Role(_) => {
            ctx.insert("aws:userid", principal.principal_id.clone());
        }
        SimulatedPrincipal::RoleSession { session, .. } => {
            ctx.insert("aws:userid", format!("{}:{session}", principal.principal_id));
        }
    }
    ctx.insert("aws:PrincipalArn", principal.arn.clone());
    for (k, v) in &principal.tags {
        ctx.insert(&format!("aws:PrincipalTag/{k}"), v.clone());
    }
    for e in &req.context_entries {
        ctx.insert_multi(&e.context_key_name, e.context_key_values.clone());
    }
    let resources = if req.resource_arns.is_empty() { vec!["*".to_owned()] } else { req.resource_arns };
    let mut results = Vec::new();
    for action in &req.action_names {
        for resource in &resources {
            let d = evaluate(&policies, &Request { action, resource, context: &ctx });
            let matched: Vec<Value> = d
                .statement
                .iter()
                .map(|s| json!({ "SourcePolicyId": s.policy.as_ref(), "Sid": s.sid.as_deref(), "StatementIndex": s.index }))
                .collect();
            results.push(json!({ "EvalActionName": action, "EvalResourceName": resource,
                "EvalDecision": decision_name(d.effect), "MatchedStatements": matched }));
        }
    }
    Ok(json!({ "EvaluationResults": results, "IsTruncated": false }))
}

/// The principal a simulation is about: a user, a role, or a session of a role
/// (`arn:airlock:sts::<account>:assumed-role/<role>/<session>`), whose policies are the role's.
#[derive(Debug, PartialEq, Eq)]
enum SimulatedPrincipal {
    User(String),
    Role(String),
    RoleSession { role: String, session: String },
}

impl SimulatedPrincipal {
    fn parse(account: &str, arn: &str) -> Result<Self, ApiError> {
        let iam = format!("arn:airlock:iam::{account}:");
        let sts = format!("arn:airlock:sts::{account}:assumed-role/");
        let parsed = if let Some(rest) = arn.strip_prefix(&iam) {
            match rest.split_once('/') {
                Some(("user", name)) => Some(SimulatedPrincipal::User(name.to_owned())),
                Some(("role", name)) => Some(SimulatedPrincipal::Role(name.to_owned())),
                _ => None,
            }
        } else if let Some(rest) = arn.strip_prefix(&sts) {
            rest.split_once('/').map(|(role, session)| SimulatedPrincipal::RoleSession {
                role: role.to_owned(),
                session: session.to_owned(),
            })
        } else {
            None
        };
        parsed.filter(|p| !p.name().is_empty() && !p.name().contains('/')).ok_or_else(|| {
            ApiError::bad(
                "InvalidInput",
                format!("PolicySourceArn {arn:?} is not a user, role or assumed-role ARN of this account"),
            )
        })
    }

    fn name(&self) -> &str {
        match self {
            SimulatedPrincipal::User(n) | SimulatedPrincipal::Role(n) => n,
            SimulatedPrincipal::RoleSession { role, .. } => role,
        }
    }

    fn kind(&self) -> PrincipalKind {
        match self {
            SimulatedPrincipal::User(_) => PrincipalKind::User,
            _ => PrincipalKind::Role,
        }
    }

    /// The resource the simulation is authorized on: the principal whose policies it reveals.
    fn authorized_arn(&self, app: &App) -> String {
        principal_arn(app, self.kind(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::SimulatedPrincipal as S;

    #[test]
    fn simulated_principals_parse() {
        let p = |arn: &str| S::parse("123456789012", arn).map_err(|e| e.code);
        assert_eq!(p("arn:airlock:iam::123456789012:user/alice"), Ok(S::User("alice".into())));
        assert_eq!(p("arn:airlock:iam::123456789012:role/ops"), Ok(S::Role("ops".into())));
        assert_eq!(
            p("arn:airlock:sts::123456789012:assumed-role/ops/laptop"),
            Ok(S::RoleSession { role: "ops".into(), session: "laptop".into() })
        );
        for bad in [
            "arn:airlock:iam::999999999999:user/alice",
            "arn:airlock:iam::123456789012:policy/p",
            "arn:airlock:iam::123456789012:user/",
            "arn:airlock:iam::123456789012:user/a/b",
            "arn:airlock:sts::123456789012:assumed-role/ops",
            "*",
        ] {
            assert_eq!(p(bad), Err("InvalidInput"), "{bad}");
        }
    }
}
