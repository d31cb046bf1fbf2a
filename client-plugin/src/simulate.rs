//! `airlock iam simulate`: evaluates a principal's policies for some actions and says, one line
//! per result, which statement decided; the exit status lets scripts test a permission.

use std::io::Write;

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use crate::call::write_json;
use crate::iam_params::{context_entries, parse_context};

/// Exit status when some action is not allowed (0 when all are).
pub const EXIT_NOT_ALLOWED: i32 = 1;

/// How `simulate` shows its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SimulateOutput {
    /// One line per action and resource, naming the deciding statements.
    #[default]
    Text,
    /// The response JSON as the broker sent it.
    Json,
}

/// `airlock iam simulate` (alias `simulate-principal-policy`, with the AWS CLI's flag names).
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// ARN of the user, role or assumed-role session whose policies are evaluated.
    #[arg(long, visible_alias = "policy-source-arn", value_name = "ARN")]
    pub principal: String,
    /// Action to test, e.g. ssm:StartSession (repeat, or list several).
    #[arg(long = "action", visible_alias = "action-names", value_name = "ACTION", num_args = 1.., required = true)]
    pub actions: Vec<String>,
    /// Resource ARN to test against (repeat, or list several; the broker's default is `*`).
    #[arg(long = "resource", visible_alias = "resource-arns", value_name = "ARN", num_args = 1..)]
    pub resources: Vec<String>,
    /// Condition key value, e.g. aws:SourceIp=10.0.0.1; a repeated key makes a list.
    #[arg(long = "context", value_name = "KEY=VALUE", num_args = 1.., value_parser = parse_context)]
    pub context: Vec<(String, String)>,
    /// text: one line per result; json: the raw response.
    #[arg(long, value_enum, default_value_t)]
    pub output: SimulateOutput,
}

impl SimulateArgs {
    /// The `SimulatePrincipalPolicy` request body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("PolicySourceArn".into(), json!(self.principal));
        body.insert("ActionNames".into(), json!(self.actions));
        if !self.resources.is_empty() {
            body.insert("ResourceArns".into(), json!(self.resources));
        }
        let entries = context_entries(&self.context);
        if !entries.is_empty() {
            body.insert("ContextEntries".into(), Value::Array(entries));
        }
        Value::Object(body)
    }
}

fn results(response: &Value) -> &[Value] {
    response.get("EvaluationResults").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or("?")
}

/// Whether there are results and every one is `allowed`: an empty answer proves nothing.
pub fn all_allowed(response: &Value) -> bool {
    let results = results(response);
    !results.is_empty() && results.iter().all(|r| text(r, "EvalDecision") == "allowed")
}

/// One result as a line, e.g.
/// `allowed  ssm:StartSession on arn:… — by policy AdministratorAccess statement 0 (Sid All)`.
pub fn describe(result: &Value) -> String {
    let matched = result.get("MatchedStatements").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let why = if matched.is_empty() {
        "no statement matched".to_owned()
    } else {
        let each: Vec<String> = matched.iter().map(describe_statement).collect();
        format!("by {}", each.join(", "))
    };
    format!(
        "{:<8} {} on {} — {why}",
        text(result, "EvalDecision"),
        text(result, "EvalActionName"),
        text(result, "EvalResourceName")
    )
}

fn describe_statement(statement: &Value) -> String {
    let index = match statement.get("StatementIndex") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "?".to_owned(),
    };
    let mut line = format!("policy {} statement {index}", text(statement, "SourcePolicyId"));
    if let Some(sid) = statement.get("Sid").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        line.push_str(&format!(" (Sid {sid})"));
    }
    line
}

/// Shows a `SimulatePrincipalPolicy` response as `format` asks; returns the exit status, 0
/// when every result is allowed, else [`EXIT_NOT_ALLOWED`].
pub fn write_results(out: &mut dyn Write, response: &Value, format: SimulateOutput) -> std::io::Result<i32> {
    match format {
        SimulateOutput::Json => write_json(out, response)?,
        SimulateOutput::Text => {
            for result in results(response) {
                writeln!(out, "{}", describe(result))?;
            }
            out.flush()?;
        }
    }
    Ok(if all_allowed(response) { 0 } else { EXIT_NOT_ALLOWED })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let argv = std::iter::once("simulate").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    const ALICE: &str = "arn:airlock:iam::000000000000:user/alice";

    #[test]
    fn minimal_body() {
        let a = parse(&["--principal", ALICE, "--action", "ssm:StartSession"]).unwrap();
        assert_eq!(a.output, SimulateOutput::Text);
        assert_eq!(a.body(), json!({"PolicySourceArn": ALICE, "ActionNames": ["ssm:StartSession"]}));
    }

    #[test]
    fn full_body() {
        let a = parse(&[
            "--principal",
            ALICE,
            "--action",
            "ssm:StartSession",
            "--action",
            "ssm:TerminateSession",
            "ssm:ResumeSession",
            "--resource",
            "arn:airlock:ssm:us-east-1:000000000000:managed-instance/mi-1",
            "--context",
            "aws:SourceIp=10.0.0.1",
            "ssm:resourceTag/env=prod",
            "--context",
            "aws:SourceIp=10.0.0.2",
            "--output",
            "json",
        ])
        .unwrap();
        assert_eq!(a.output, SimulateOutput::Json);
        assert_eq!(
            a.body(),
            json!({
                "PolicySourceArn": ALICE,
                "ActionNames": ["ssm:StartSession", "ssm:TerminateSession", "ssm:ResumeSession"],
                "ResourceArns": ["arn:airlock:ssm:us-east-1:000000000000:managed-instance/mi-1"],
                "ContextEntries": [
                    {"ContextKeyName": "aws:SourceIp", "ContextKeyValues": ["10.0.0.1", "10.0.0.2"],
                     "ContextKeyType": "stringList"},
                    {"ContextKeyName": "ssm:resourceTag/env", "ContextKeyValues": ["prod"],
                     "ContextKeyType": "string"}
                ]
            })
        );
    }

    #[test]
    fn aws_flag_names_work_too() {
        let a =
            parse(&["--policy-source-arn", ALICE, "--action-names", "a:B", "--resource-arns", "*"]).unwrap();
        assert_eq!(
            a.body(),
            json!({"PolicySourceArn": ALICE, "ActionNames": ["a:B"], "ResourceArns": ["*"]})
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            vec!["--action", "ssm:StartSession"],
            vec!["--principal", ALICE],
            vec!["--principal", ALICE, "--action", "a:B", "--context", "novalue"],
            vec!["--principal", ALICE, "--action", "a:B", "--output", "yaml"],
        ] {
            let err = parse(&bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    fn response() -> Value {
        json!({"EvaluationResults": [
            {"EvalActionName": "ssm:StartSession", "EvalResourceName": "arn:airlock:ssm:us-east-1:0:managed-instance/mi-1",
             "EvalDecision": "allowed",
             "MatchedStatements": [{"SourcePolicyId": "AdministratorAccess", "Sid": "All", "StatementIndex": 0}]},
            {"EvalActionName": "iam:CreateUser", "EvalResourceName": "*", "EvalDecision": "implicitDeny",
             "MatchedStatements": []},
            {"EvalActionName": "ssm:TerminateSession", "EvalResourceName": "*", "EvalDecision": "explicitDeny",
             "MatchedStatements": [
                 {"SourcePolicyId": "NoKill", "StatementIndex": 2},
                 {"SourcePolicyId": "Guard", "Sid": "", "StatementIndex": 1}
             ]}
        ]})
    }

    #[test]
    fn lines_name_the_deciding_statement() {
        let r = response();
        let lines: Vec<String> = results(&r).iter().map(describe).collect();
        assert_eq!(
            lines,
            [
                "allowed  ssm:StartSession on arn:airlock:ssm:us-east-1:0:managed-instance/mi-1 — \
                 by policy AdministratorAccess statement 0 (Sid All)",
                "implicitDeny iam:CreateUser on * — no statement matched",
                "explicitDeny ssm:TerminateSession on * — by policy NoKill statement 2, policy Guard statement 1",
            ]
        );
        assert_eq!(describe(&json!({})), "?        ? on ? — no statement matched", "missing members");
    }

    #[test]
    fn exit_status_says_whether_all_are_allowed() {
        let mut out = Vec::new();
        assert_eq!(write_results(&mut out, &response(), SimulateOutput::Text).unwrap(), EXIT_NOT_ALLOWED);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 3);

        let allowed = json!({"EvaluationResults": [response()["EvaluationResults"][0].clone()]});
        let mut out = Vec::new();
        assert_eq!(write_results(&mut out, &allowed, SimulateOutput::Text).unwrap(), 0);
        let mut out = Vec::new();
        assert_eq!(write_results(&mut out, &allowed, SimulateOutput::Json).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\n    \"EvaluationResults\": ["), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), allowed, "JSON output is the response");

        let mut out = Vec::new();
        assert_eq!(
            write_results(&mut out, &json!({"EvaluationResults": []}), SimulateOutput::Text).unwrap(),
            1
        );
        assert!(out.is_empty());
        assert!(!all_allowed(&json!({})));
    }
}
