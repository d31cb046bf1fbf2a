//! Authorization of API calls: the caller's policies, the request context, the decision,
//! and the audit trail of decisions on session actions.

use std::net::IpAddr;
use std::sync::Arc;

use crate::app::{now_us, App};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::ops::{Op, Service};
use crate::policy::{evaluate, Context, Decision, Effect, Policy, Request};
use crate::store::{AuditEvent, StoreError};

/// Facts about the request that policies may test.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// The caller's IP address (`aws:SourceIp`).
    pub source_ip: IpAddr,
    /// Whether the request came over TLS (`aws:SecureTransport`).
    pub secure: bool,
    /// The broker's region (`aws:RequestedRegion`).
    pub region: String,
    /// Set when the caller is a signed-in console session rather than a signed request.
    pub console: Option<ConsoleAuth>,
}

/// How a console session signed in: what `aws:MultiFactorAuthPresent` and
/// `aws:MultiFactorAuthAge` say about its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleAuth {
    /// When the session's sign-in passed an MFA code, Unix time in microseconds.
    pub mfa_at_us: Option<i64>,
}

/// Loads and compiles a principal's policies (inline, then attached), cached until the next
/// identity change.
pub async fn policies_of(app: &App, principal: &str) -> Result<Arc<Vec<Policy>>, ApiError> {
    if let Some(hit) = app.policy_cache.get(principal) {
        return Ok(hit);
    }
    let mut compiled = Vec::new();
    let docs = app.store.inline_policies(principal).await?;
    let managed = app.store.attached_policies(principal).await?;
    for (name, doc) in docs
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_str()))
        .chain(managed.iter().map(|m| (m.name.as_str(), m.document.as_str())))
    {
        // Documents were checked when attached; one that no longer parses denies nothing and
        // allows nothing, and says so in the log.
        match Policy::parse(name, doc) {
            Ok(p) => compiled.push(p),
            Err(e) => tracing::error!(principal, policy = name, error = %e, "stored policy does not parse"),
        }
    }
    let compiled = Arc::new(compiled);
    app.policy_cache.put(principal, compiled.clone());
    Ok(compiled)
}

/// One request's authorization: the caller and the facts about its request.
pub struct Gate<'a> {
    /// The broker's shared state.
    pub app: &'a App,
    /// Who is asking.
    pub caller: &'a Caller,
    /// Facts about the request.
    pub facts: &'a RequestFacts,
}

/// The SimulatePrincipalPolicy / audit spelling of an effect.
pub fn decision_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allowed",
        Effect::ExplicitDeny => "explicitDeny",
        Effect::ImplicitDeny => "implicitDeny",
    }
}

impl Gate<'_> {
    /// The context every request carries.
    pub fn context(&self) -> Context {
        let (app, caller, facts) = (self.app, self.caller, self.facts);
        let mut ctx = Context::new();
        let now = chrono::Utc::now();
        ctx.insert("aws:userid", caller.user_id())
            // As in AWS, a role session's principal ARN is the role's, not the session's.
            .insert("aws:PrincipalArn", caller.principal.arn.clone())
            .insert("aws:PrincipalAccount", app.settings.account.clone())
            .insert("aws:SourceIp", facts.source_ip.to_string())
            .insert("aws:CurrentTime", now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .insert("aws:EpochTime", now.timestamp().to_string())
            .insert("aws:SecureTransport", facts.secure.to_string())
            .insert("aws:RequestedRegion", facts.region.clone());
        if let Some(name) = caller.user_name() {
            ctx.insert("aws:username", name.to_owned());
        }
        match (facts.console, caller.role_session.is_some()) {
            (Some(ConsoleAuth { mfa_at_us: Some(at_us) }), _) => {
                // Whole seconds since the code was given, as IAM counts the age.
                let age = (now.timestamp_micros() - at_us).max(0) / 1_000_000;
                ctx.insert("aws:MultiFactorAuthPresent", "true".to_owned())
                    .insert("aws:MultiFactorAuthAge", age.to_string());
            }
            // Console sessions and temporary credentials always carry the key (long-term
            // access keys never do); AssumeRole takes no MFA code yet, so it is false there.
            (Some(_), _) | (None, true) => {
                ctx.insert("aws:MultiFactorAuthPresent", "false".to_owned());
            }
            (None, false) => {}
        }
        for (k, v) in caller.tags() {
            ctx.insert(&format!("aws:PrincipalTag/{k}"), v.clone());
        }
        ctx
    }

    /// Authorizes `op` on `resource` with the base context.
    pub async fn require(&self, op: Op, resource: &str) -> Result<(), ApiError> {
        self.require_in(&self.context(), op, resource).await
    }

    /// Authorizes `op` on `resource` with a context the handler extended (resource tags,
    /// request tags, document parameters); refuses with the service's error, and records the
    /// decision in the audit log when the operation is audited.
    pub async fn require_in(&self, ctx: &Context, op: Op, resource: &str) -> Result<(), ApiError> {
        self.decide(ctx, op.action(), resource, op.service(), op.audited()).await
    }

    /// The one place a policy decision is made for a request.
    async fn decide(
        &self,
        ctx: &Context,
        action: &str,
        resource: &str,
        service: Service,
        audit: bool,
    ) -> Result<(), ApiError> {
        let app = self.app;
        let policies = policies_of(app, &self.caller.principal.name).await?;
        let decision = evaluate(&policies, &Request { action, resource, context: ctx });
        let arn = self.caller.arn(&app.settings.account);
        if audit {
            record(app, &arn, action, resource, &decision, self.facts).await.map_err(ApiError::from)?;
        }
        match decision.effect {
            Effect::Allow => Ok(()),
            effect => {
                let why = if effect == Effect::ExplicitDeny {
                    "with an explicit deny in an identity-based policy".to_owned()
                } else {
                    format!("because no identity-based policy allows the {action} action")
                };
                let code = match service {
                    Service::Ssm | Service::Recordings => "AccessDeniedException",
                    Service::Iam | Service::Sts => "AccessDenied",
                };
                tracing::info!(principal = %arn, action, resource, decision = %decision, "access denied");
                Err(ApiError::bad(
                    code,
                    format!(
                        "User: {arn} is not authorized to perform: {action} on resource: {resource} {why}"
                    ),
                ))
            }
        }
    }
}

async fn record(
    app: &App,
    arn: &str,
    action: &str,
    resource: &str,
    decision: &Decision,
    facts: &RequestFacts,
) -> Result<(), StoreError> {
    let st = decision.statement.as_ref();
    app.store
        .append_audit(&AuditEvent {
            at_us: now_us(),
            principal: arn.to_owned(),
            action: action.to_owned(),
            resource: resource.to_owned(),
            decision: decision_name(decision.effect).to_owned(),
            policy: st.map(|s| s.policy.to_string()),
            sid: st.and_then(|s| s.sid.as_ref().map(|x| x.to_string())),
            statement_index: st.map(|s| s.index as i64),
            source_ip: facts.source_ip.to_string(),
        })
        .await
}

#[cfg(test)]
#[path = "authz_tests.rs"]
mod tests;
