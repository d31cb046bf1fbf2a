//! Role trust policies: who may assume a role (`Principal`) and under which conditions.
//!
//! `sts:AssumeRole` is allowed only when the caller's own policies allow it on the role *and*
//! the role's trust policy allows the caller, as in IAM. A trust statement names principals
//! by ARN (`{"AWS": "arn:airlock:iam::<account>:user/alice"}`), the whole account (`"<account>"`
//! or `arn:airlock:iam::<account>:root`: the caller's own policies decide) or anyone (`"*"`);
//! the rest of the statement (Effect, Action, Condition) is evaluated by the policy engine.

use serde_json::{Map, Value};

use crate::app::App;
use crate::error::ApiError;
use crate::policy::{evaluate, CompiledPolicy, Context, Effect, Policy, Request};

/// The trust policy of a role created without one: the account's principals, whose own
/// policies must then allow `sts:AssumeRole` on the role.
pub(crate) fn account_trust(account: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:airlock:iam::{account}:root")}, "Action": "sts:AssumeRole"}]})
    .to_string()
}

/// A role's trust policy as stored, or the account's trust for a role that has none.
pub(crate) async fn role_trust_text(app: &App, role: &str) -> Result<String, ApiError> {
    Ok(app.store.trust_policy(role).await?.unwrap_or_else(|| account_trust(&app.settings.account)))
}

/// A role's trust policy, parsed. Documents were checked when stored; one that no longer
/// parses trusts nobody, and says so in the log.
pub(crate) async fn role_trust(app: &App, role: &str) -> Result<TrustPolicy, ApiError> {
    let text = role_trust_text(app, role).await?;
    Ok(TrustPolicy::parse(&text, &app.settings.account).unwrap_or_else(|e| {
        tracing::error!(role, error = %e, "stored trust policy does not parse: nobody may assume the role");
        TrustPolicy { statements: Vec::new() }
    }))
}

/// Checks a trust policy given to CreateRole or UpdateAssumeRolePolicy.
pub(crate) fn check(app: &App, text: &str) -> Result<(), ApiError> {
    TrustPolicy::parse(text, &app.settings.account)
        .map(|_| ())
        .map_err(|e| ApiError::bad("MalformedPolicyDocument", e.to_string()))
}

/// Whom one trust statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    /// `"*"`: any authenticated caller.
    Anyone,
    /// The account (`<account>` or `…:root`) or exact principal ARNs.
    Listed { account: bool, arns: Vec<String> },
}

impl Principals {
    fn names(&self, caller_arns: &[&str]) -> bool {
        match self {
            Principals::Anyone => true,
            Principals::Listed { account, arns } => {
                *account || arns.iter().any(|a| caller_arns.contains(&a.as_str()))
            }
        }
    }
}

/// A parsed trust policy.
#[derive(Debug)]
pub(crate) struct TrustPolicy {
    statements: Vec<(Principals, CompiledPolicy)>,
}

/// Why a trust policy was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub(crate) struct TrustError(String);

fn fault(message: impl Into<String>) -> TrustError {
    TrustError(message.into())
}

fn principals(value: &Value, account: &str) -> Result<Principals, TrustError> {
    let aws = match value {
        Value::String(s) if s == "*" => return Ok(Principals::Anyone),
        Value::Object(m) => {
            if let Some(other) = m.keys().find(|k| *k != "AWS") {
                return Err(fault(format!(
                    "Principal {other:?} is not supported: trust policies here name AWS principals of this account"
                )));
            }
            m.get("AWS").ok_or_else(|| fault("Principal needs an AWS member"))?
        }
        _ => return Err(fault("Principal must be \"*\" or {\"AWS\": …}")),
    };
    let list: Vec<&str> = match aws {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| fault("Principal AWS values must be strings")))
            .collect::<Result<_, _>>()?,
        _ => return Err(fault("Principal AWS must be a string or a non-empty list of strings")),
    };
    let (mut whole_account, mut arns) = (false, Vec::new());
    let root = format!("arn:airlock:iam::{account}:root");
    let iam = format!("arn:airlock:iam::{account}:");
    let sts = format!("arn:airlock:sts::{account}:assumed-role/");
    for p in list {
        if p == "*" {
            return Ok(Principals::Anyone);
        } else if p == account || p == root {
            whole_account = true;
        } else if p.contains('*') || p.contains('?') {
            return Err(fault(format!(
                "Principal {p:?}: wildcards are not allowed in a principal (use \"*\")"
            )));
        } else if (p.starts_with(&iam)
            && (p[iam.len()..].starts_with("user/") || p[iam.len()..].starts_with("role/")))
            || p.starts_with(&sts)
        {
            arns.push(p.to_owned());
        } else {
            return Err(fault(format!(
                "Principal {p:?} is not a user, role or session of account {account}"
            )));
        }
    }
    Ok(Principals::Listed { account: whole_account, arns })
}

impl TrustPolicy {
    /// Parses and checks a trust policy document of a role in `account`.
    pub(crate) fn parse(text: &str, account: &str) -> Result<Self, TrustError> {
        if text.len() > 2048 {
            return Err(fault("trust policies are limited to 2,048 characters"));
        }
        let doc: Value = serde_json::from_str(text).map_err(|e| fault(format!("not JSON: {e}")))?;
        let Value::Object(mut doc) = doc else { return Err(fault("a policy is a JSON object")) };
        let statements = match doc.remove("Statement") {
            Some(Value::Array(list)) => list,
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err(fault("Statement must be an object or a list of objects")),
        };
        let version = doc.remove("Version");
        if let Some(k) = doc.keys().find(|k| *k != "Id") {
            return Err(fault(format!("unknown member {k:?} (expected Version, Id, Statement)")));
        }
        let mut out = Vec::new();
        for (i, statement) in statements.into_iter().enumerate() {
            let Value::Object(mut st) = statement else {
                return Err(fault(format!("Statement[{i}] must be an object")));
            };
            if st.contains_key("NotPrincipal") {
                return Err(fault(format!("Statement[{i}]: NotPrincipal is not supported")));
            }
            if st.contains_key("Resource") || st.contains_key("NotResource") {
                return Err(fault(format!(
                    "Statement[{i}]: a trust policy names no Resource (the role is the resource)"
                )));
            }
            let who =
                st.remove("Principal").ok_or_else(|| fault(format!("Statement[{i}] needs a Principal")))?;
            let who = principals(&who, account).map_err(|e| fault(format!("Statement[{i}]: {e}")))?;
            st.insert("Resource".into(), Value::String("*".into()));
            let mut single = Map::new();
            if let Some(v) = &version {
                single.insert("Version".into(), v.clone());
            }
            single.insert("Statement".into(), Value::Array(vec![Value::Object(st)]));
            let compiled = Policy::parse(&format!("trust[{i}]"), &Value::Object(single).to_string())
                .map_err(|e| fault(format!("Statement[{i}]: {e}")))?;
            out.push((who, compiled));
        }
        if out.is_empty() {
            return Err(fault("a trust policy needs at least one statement"));
        }
        Ok(TrustPolicy { statements: out })
    }

    /// Whether the role at `role_arn` trusts a caller known by `caller_arns` (its ARN, and for
    /// a role session also its role's ARN) to assume it, in the request's context.
    pub(crate) fn allows(&self, caller_arns: &[&str], role_arn: &str, ctx: &Context) -> bool {
        let applicable: Vec<CompiledPolicy> = self
            .statements
            .iter()
            .filter(|(who, _)| who.names(caller_arns))
            .map(|(_, p)| p.clone())
            .collect();
        let decision =
            evaluate(&applicable, &Request { action: "sts:AssumeRole", resource: role_arn, context: ctx });
        decision.effect == Effect::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";
    const ROLE: &str = "arn:airlock:iam::123456789012:role/ops";
    const ALICE: &str = "arn:airlock:iam::123456789012:user/alice";
    const BOB: &str = "arn:airlock:iam::123456789012:user/bob";

    fn trust(doc: serde_json::Value) -> TrustPolicy {
        TrustPolicy::parse(&doc.to_string(), ACCOUNT).unwrap()
    }

    #[test]
    fn named_principals_only() {
        let t = trust(serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": ALICE}, "Action": "sts:AssumeRole"}]}));
        let ctx = Context::new();
        assert!(t.allows(&[ALICE], ROLE, &ctx));
        assert!(!t.allows(&[BOB], ROLE, &ctx));
    }

    #[test]
    fn account_trust_defers_to_identity_policies_and_deny_wins() {
        let t = TrustPolicy::parse(&account_trust(ACCOUNT), ACCOUNT).unwrap();
        assert!(t.allows(&[BOB], ROLE, &Context::new()));
        let t = trust(serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"},
            {"Effect": "Deny", "Principal": {"AWS": [BOB]}, "Action": "sts:*"}]}));
        assert!(t.allows(&[ALICE], ROLE, &Context::new()));
        assert!(!t.allows(&[BOB], ROLE, &Context::new()));
    }

    #[test]
    fn conditions_apply() {
        let t = trust(serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": "*", "Action": "sts:AssumeRole",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}]}));
        let mut ctx = Context::new();
        assert!(!t.allows(&[ALICE], ROLE, &ctx));
        ctx.insert("aws:MultiFactorAuthPresent", "true".to_owned());
        assert!(t.allows(&[ALICE], ROLE, &ctx));
    }

    #[test]
    fn bad_documents_are_refused_by_name() {
        for (doc, says) in [
            (
                serde_json::json!({"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}),
                "needs a Principal",
            ),
            (
                serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole"}]}),
                "\"Service\" is not supported",
            ),
            (
                serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:airlock:iam::123456789012:user/*"},
                "Action": "sts:AssumeRole"}]}),
                "wildcards",
            ),
            (
                serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:airlock:iam::999999999999:user/x"},
                "Action": "sts:AssumeRole"}]}),
                "not a user, role or session of account",
            ),
            (
                serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole",
                "Resource": "*"}]}),
                "names no Resource",
            ),
            (
                serde_json::json!({"Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "sts:AssumeRole"}]}),
                "Statement[0]",
            ),
            (serde_json::json!({"Statement": []}), "at least one statement"),
        ] {
            let e = TrustPolicy::parse(&doc.to_string(), ACCOUNT).unwrap_err();
            assert!(e.0.contains(says), "{doc}: {e}");
        }
    }
}
