//! IAM-style identity policies: parse and compile JSON documents once, then decide requests
//! with IAM's rules (explicit Deny anywhere wins, then any Allow, else implicit deny).
//!
//! ```ignore
//! let policy = Policy::parse("dev", r#"{"Version": "2012-10-17", "Statement": [...]}"#)?;
//! let mut ctx = Context::new();
//! ctx.insert("aws:username", "alice").insert("aws:SourceIp", "10.0.0.7");
//! let req = Request { action: "ssm:StartSession", resource: "arn:airlock:ssm:…", context: &ctx };
//! let decision = evaluate(&[policy], &req);
//! ```
//!
//! Semantics decided where IAM's documentation is silent or ambiguous:
//! - a negated operator is exactly the negation of its positive form. A request value the
//!   operator cannot read (`abc` for NumericNotEquals) and a policy value whose variable
//!   cannot be resolved both simply "do not match": a positive operator is false for them, a
//!   negated one true, which keeps guardrails such as `Deny` + `StringNotEquals`
//!   `${aws:PrincipalTag/team}` in force for principals lacking the tag;
//! - an unqualified operator on a multivalued key: positive needs one request value to
//!   match, negated needs none to;
//! - a key present with an empty set of values is treated as absent;
//! - substituted variable values are literal text, never wildcards; multivalued keys are
//!   not substituted (the default, if any, is used);
//! - Resource entries and Arn* values must be `*` or six-part ARNs, compared part by part;
//!   as in IAM, two to five parts whose last ends in `*` (`arn:aws:ssm:*`) are accepted too,
//!   and that last `*` spans the rest of the ARN, colons included.

#![warn(missing_docs)]

mod condition;
mod error;
mod eval;
mod json;
mod parse;
mod pattern;
mod scalar;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use error::PolicyError;
pub use eval::{evaluate, Decision, Effect, StatementRef};
pub use parse::{CompiledPolicy, Policy};

/// Request-context keys (case-insensitive) with one or more string values each.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Keys are stored lowercased so policy keys, compiled lowercased, need no folding per lookup.
    values: HashMap<Box<str>, Vec<String>>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a single-valued key, replacing any previous value.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.to_lowercase().into(), vec![value.into()]);
        self
    }

    /// Sets a multivalued key (e.g. `aws:TagKeys`), replacing any previous values.
    pub fn insert_multi<I, S>(&mut self, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.values.insert(key.to_lowercase().into(), values.into_iter().map(Into::into).collect());
        self
    }

    /// The values of `key`, looked up case-insensitively.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.get_lower(&key.to_lowercase())
    }

    /// Lookup by an already lowercased key.
    pub(crate) fn get_lower(&self, key: &str) -> Option<&[String]> {
        self.values.get(key).map(Vec::as_slice)
    }
}

/// What is being asked: an action on a resource, with the request context.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `service:Action`, e.g. `ssm:StartSession`; compared case-insensitively.
    pub action: &'a str,
    /// The resource ARN (or `*`); compared case-sensitively.
    pub resource: &'a str,
    /// Condition keys and policy-variable values.
    pub context: &'a Context,
}
