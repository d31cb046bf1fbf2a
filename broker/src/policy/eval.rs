//! IAM's decision order over a set of policies: an explicit Deny anywhere wins, otherwise an
//! Allow anywhere grants, otherwise the request is implicitly denied.

use std::fmt;
use std::sync::Arc;

use super::parse::{CompiledPolicy, Prepared, StatementEffect};
use super::pattern::split_arn;
use super::Request;

/// The outcome of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A statement allowed the request and none denied it.
    Allow,
    /// A Deny statement matched; no Allow can override it.
    ExplicitDeny,
    /// No statement matched: denied by default.
    ImplicitDeny,
}

/// The statement that decided a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementRef {
    /// The policy's name as given to `Policy::parse`.
    pub policy: Arc<str>,
    /// The policy's position in the slice passed to [`evaluate`].
    pub policy_index: usize,
    /// The statement's `Sid`, if it has one.
    pub sid: Option<Arc<str>>,
    /// The statement's position in its policy's `Statement` list.
    pub index: usize,
}

/// An authorization decision and the statement responsible for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow, explicit deny or implicit deny.
    pub effect: Effect,
    /// The first matching Deny, else the first matching Allow; `None` for an implicit deny.
    pub statement: Option<StatementRef>,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.effect {
            Effect::Allow => "allowed",
            Effect::ExplicitDeny => "explicitly denied",
            Effect::ImplicitDeny => "implicitly denied",
        };
        match &self.statement {
            None => write!(f, "{what}: no statement matched"),
            Some(s) => {
                write!(f, "{what} by policy `{}` statement {}", s.policy, s.index)?;
                match &s.sid {
                    Some(sid) => write!(f, " ({sid})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Decides `req` against every policy attached to the principal.
pub fn evaluate(policies: &[CompiledPolicy], req: &Request<'_>) -> Decision {
    // An action without a colon can only match a bare `*` action pattern.
    let (service, name) = req.action.split_once(':').unwrap_or(("", req.action));
    let prepared = Prepared { service, name, arn: split_arn(req.resource), ctx: req.context };
    let mut first_allow: Option<(usize, usize)> = None;
    for (pi, policy) in policies.iter().enumerate() {
        for (si, statement) in policy.statements.iter().enumerate() {
            // Once something allows, only a Deny can change the outcome: skip further Allows.
            if statement.effect == StatementEffect::Allow && first_allow.is_some() {
                continue;
            }
            if !statement.applies(&prepared) {
                continue;
            }
            match statement.effect {
                StatementEffect::Deny => return decided(Effect::ExplicitDeny, policies, pi, si),
                StatementEffect::Allow => first_allow = Some((pi, si)),
            }
        }
    }
    match first_allow {
        Some((pi, si)) => decided(Effect::Allow, policies, pi, si),
        None => Decision { effect: Effect::ImplicitDeny, statement: None },
    }
}

fn decided(effect: Effect, policies: &[CompiledPolicy], pi: usize, si: usize) -> Decision {
    let policy = &policies[pi];
    let statement = StatementRef {
        policy: policy.name.clone(),
        policy_index: pi,
        sid: policy.statements[si].sid.clone(),
        index: si,
    };
    Decision { effect, statement: Some(statement) }
}
