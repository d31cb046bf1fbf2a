//! Decision matrix, parser tests and the micro-benchmark for the policy evaluator.
//!
//! Every matrix row names the IAM rule it checks and asserts both the effect and the
//! statement (policy index, statement index, Sid) that decided it.

mod bench;
mod matrix_order;
mod matrix_resources;
mod matrix_sets;
mod matrix_ssm;
mod matrix_strings;
mod matrix_typed;
mod parse_errors;
mod proptests;

use super::{evaluate, Context, Effect, Policy, Request};

/// Context entries for a case: key and its values (one value = single-valued key).
pub(super) type Ctx = &'static [(&'static str, &'static [&'static str])];

/// Expected outcome: the effect and the (policy, statement) indexes that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    Allow(usize, usize),
    Deny(usize, usize),
    Implicit,
}

/// One row of the matrix.
pub(super) struct Case {
    pub rule: &'static str,
    pub action: &'static str,
    pub resource: &'static str,
    pub ctx: Ctx,
    pub want: Want,
}

/// Shorthand constructor for a [`Case`].
pub(super) fn case(
    rule: &'static str,
    action: &'static str,
    resource: &'static str,
    ctx: Ctx,
    want: Want,
) -> Case {
    Case { rule, action, resource, ctx, want }
}

/// Policies evaluated together, and the requests made against them.
pub(super) struct Group {
    pub name: &'static str,
    pub docs: Vec<String>,
    pub cases: Vec<Case>,
}

/// A group over fixed documents.
pub(super) fn group(name: &'static str, docs: &[&str], cases: Vec<Case>) -> Group {
    Group { name, docs: docs.iter().map(|d| d.to_string()).collect(), cases }
}

/// A group testing one Condition block: rows are (rule, context, condition holds?).
///
/// With `deny == false` the block sits on an Allow statement (holds → Allow by statement 0,
/// else implicit deny); with `deny == true` on a Deny after an allow-everything statement
/// (holds → explicit Deny by statement 1, else Allow by statement 0).
pub(super) fn cond_group(
    name: &'static str,
    deny: bool,
    condition: &str,
    rows: &[(&'static str, Ctx, bool)],
) -> Group {
    let stmt = |sid: &str, effect: &str, cond: Option<&str>| {
        let cond = cond.map(|c| format!(r#","Condition":{c}"#)).unwrap_or_default();
        format!(r#"{{"Sid":"{sid}","Effect":"{effect}","Action":"ssm:StartSession","Resource":"*"{cond}}}"#)
    };
    let statements = if deny {
        format!("{},{}", stmt("Base", "Allow", None), stmt("Guard", "Deny", Some(condition)))
    } else {
        stmt("Grant", "Allow", Some(condition))
    };
    let doc = format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#);
    let cases = rows
        .iter()
        .map(|&(rule, ctx, holds)| {
            let want = match (deny, holds) {
                (false, true) => Want::Allow(0, 0),
                (false, false) => Want::Implicit,
                (true, true) => Want::Deny(0, 1),
                (true, false) => Want::Allow(0, 0),
            };
            case(
                rule,
                "ssm:StartSession",
                "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-1",
                ctx,
                want,
            )
        })
        .collect();
    Group { name, docs: vec![doc], cases }
}

/// Builds the request context of a case.
pub(super) fn context(entries: Ctx) -> Context {
    let mut ctx = Context::new();
    for (key, values) in entries {
        match values {
            [one] => ctx.insert(key, *one),
            many => ctx.insert_multi(key, many.iter().copied()),
        };
    }
    ctx
}

/// The Sid of statement `si` in a document, read independently of the parser under test.
fn sid_of(doc: &str, si: usize) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(doc).ok()?;
    let st = match &v["Statement"] {
        serde_json::Value::Array(items) => items.get(si)?.clone(),
        one => one.clone(),
    };
    st.get("Sid").and_then(|s| s.as_str()).map(str::to_string)
}

/// Runs every case of every group; panics listing all failures.
pub(super) fn run(groups: &[Group]) {
    let failures = check(groups);
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// Runs every case of every group and describes each failure.
fn check(groups: &[Group]) -> Vec<String> {
    let mut failures = Vec::new();
    for g in groups {
        let policies: Vec<Policy> = g
            .docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Policy::parse(&format!("p{i}"), d).unwrap_or_else(|e| panic!("{}: doc {i}: {e}", g.name))
            })
            .collect();
        for c in &g.cases {
            let ctx = context(c.ctx);
            let d = evaluate(&policies, &Request { action: c.action, resource: c.resource, context: &ctx });
            let got = match (&d.effect, &d.statement) {
                (Effect::Allow, Some(s)) => Some(Want::Allow(s.policy_index, s.index)),
                (Effect::ExplicitDeny, Some(s)) => Some(Want::Deny(s.policy_index, s.index)),
                (Effect::ImplicitDeny, None) => Some(Want::Implicit),
                _ => None,
            };
            let names_ok = match &d.statement {
                Some(s) => {
                    *s.policy == format!("p{}", s.policy_index)
                        && s.sid.as_deref().map(str::to_string) == sid_of(&g.docs[s.policy_index], s.index)
                }
                None => true,
            };
            if got != Some(c.want) || !names_ok {
                failures.push(format!("[{}] {}: want {:?}, got {:?} ({d})", g.name, c.rule, c.want, d));
            }
        }
    }
    failures
}

/// Every group of the matrix.
fn all_groups() -> Vec<Group> {
    let mut all = matrix_order::groups();
    all.extend(matrix_resources::groups());
    all.extend(matrix_ssm::groups());
    all.extend(matrix_strings::groups());
    all.extend(matrix_typed::groups());
    all.extend(matrix_sets::groups());
    all
}

#[test]
fn matrix_has_at_least_200_named_cases() {
    let groups = all_groups();
    let total: usize = groups.iter().map(|g| g.cases.len()).sum();
    assert!(total >= 200, "only {total} cases");
    assert!(groups.iter().flat_map(|g| &g.cases).all(|c| !c.rule.trim().is_empty()));
    println!("decision matrix: {total} cases in {} groups", groups.len());
}

#[test]
fn harness_detects_a_wrong_expectation() {
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":"ssm:*","Resource":"*"}]}"#;
    for want in [Want::Deny(0, 0), Want::Allow(0, 1), Want::Implicit] {
        let g =
            group("self-check", &[doc], vec![case("wrong on purpose", "ssm:StartSession", "*", &[], want)]);
        assert_eq!(check(&[g]).len(), 1, "{want:?} was not caught");
    }
    run(&[group("self-check", &[doc], vec![case("right", "ssm:StartSession", "*", &[], Want::Allow(0, 0))])]);
}

#[test]
fn decisions_describe_themselves_exactly() {
    let doc = r#"{"Version":"2012-10-17","Statement":[
      {"Sid":"Read","Effect":"Allow","Action":"ssm:Describe*","Resource":"*"},
      {"Effect":"Allow","Action":"ssm:StartSession","Resource":"*"},
      {"Sid":"NoTerminate","Effect":"Deny","Action":"ssm:TerminateSession","Resource":"*"}]}"#;
    let policies = [Policy::parse("ops", doc).unwrap()];
    let ctx = Context::new();
    let say = |action: &str| {
        let d = evaluate(&policies, &Request { action, resource: "*", context: &ctx });
        (d.is_allowed(), d.to_string())
    };
    assert_eq!(say("ssm:DescribeSessions"), (true, "allowed by policy `ops` statement 0 (Read)".into()));
    assert_eq!(say("ssm:StartSession"), (true, "allowed by policy `ops` statement 1".into()));
    assert_eq!(
        say("ssm:TerminateSession"),
        (false, "explicitly denied by policy `ops` statement 2 (NoTerminate)".into())
    );
    assert_eq!(say("iam:CreateUser"), (false, "implicitly denied: no statement matched".into()));
}
