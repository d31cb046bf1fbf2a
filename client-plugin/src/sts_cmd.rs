//! `airlock sts …`: temporary credentials, shaped like `aws sts …`.

use std::borrow::Cow;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::api::{ApiError, Service};
use crate::call::{ApiCall, Output};

/// The `airlock sts` subcommands.
#[derive(Debug, Subcommand)]
pub enum StsCommand {
    /// Get temporary credentials for a role: JSON, or `--export` lines for a shell.
    AssumeRole(AssumeRoleArgs),
}

/// `airlock sts assume-role`.
#[derive(Debug, Args)]
pub struct AssumeRoleArgs {
    /// ARN of the role, e.g. arn:airlock:iam::<account>:role/<name>.
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,
    /// Name of the session: part of the assumed-role ARN, so it shows in the audit log.
    #[arg(long, value_name = "NAME")]
    pub role_session_name: String,
    /// How long the credentials last (900–43200 s; the broker's default is 3600).
    #[arg(long, value_name = "SECONDS")]
    pub duration_seconds: Option<u32>,
    /// Print `export AWS_…=…` lines instead of JSON: `eval "$(airlock sts assume-role … --export)"`.
    #[arg(long)]
    pub export: bool,
}

impl StsCommand {
    /// The API call this command makes.
    pub fn into_call(self) -> ApiCall {
        match self {
            StsCommand::AssumeRole(a) => {
                let mut body = Map::new();
                body.insert("RoleArn".into(), json!(a.role_arn));
                body.insert("RoleSessionName".into(), json!(a.role_session_name));
                if let Some(seconds) = a.duration_seconds {
                    body.insert("DurationSeconds".into(), json!(seconds));
                }
                let output = if a.export { Output::Exports } else { Output::Json };
                ApiCall { output, ..ApiCall::new(Service::Sts, "AssumeRole", Value::Object(body)) }
            }
        }
    }
}

/// The `export` lines for an `AssumeRole` response, or an error when it has no credentials
/// (printing half of them would leave a shell with a mismatched key and secret).
pub fn export_lines(response: &Value) -> Result<String, ApiError> {
    let credentials = response.get("Credentials");
    let mut out = String::new();
    for (var, member) in [
        ("AWS_ACCESS_KEY_ID", "AccessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
        ("AWS_SESSION_TOKEN", "SessionToken"),
    ] {
        let value = credentials.and_then(|c| c.get(member)).and_then(Value::as_str).ok_or_else(|| {
            ApiError::response("AssumeRole", Some(200), format!("no Credentials.{member} in the response"))
        })?;
        out.push_str(&format!("export {var}={}\n", shell_quote(value)));
    }
    Ok(out)
}

/// `value` as one POSIX shell word: as is when it is made of safe characters (keys, base64
/// secrets), else single-quoted.
fn shell_quote(value: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!("'{}'", value.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        sts: StsCommand,
    }

    fn call(args: &[&str]) -> Result<ApiCall, clap::Error> {
        let argv = std::iter::once("sts").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.sts.into_call())
    }

    const ROLE: &str = "arn:airlock:iam::000000000000:role/ops";

    #[test]
    fn assume_role_body() {
        let c = call(&["assume-role", "--role-arn", ROLE, "--role-session-name", "alice"]).unwrap();
        assert_eq!(c.target(), "AirlockSTS.AssumeRole");
        assert_eq!(c.body, json!({"RoleArn": ROLE, "RoleSessionName": "alice"}));
        assert_eq!(c.output, Output::Json);

        let c = call(&[
            "assume-role",
            "--role-arn",
            ROLE,
            "--role-session-name",
            "alice",
            "--duration-seconds",
            "900",
            "--export",
        ])
        .unwrap();
        assert_eq!(c.body, json!({"RoleArn": ROLE, "RoleSessionName": "alice", "DurationSeconds": 900}));
        assert_eq!(c.output, Output::Exports);
    }

    #[test]
    fn assume_role_usage_errors() {
        for bad in [
            vec!["assume-role", "--role-arn", ROLE],
            vec!["assume-role", "--role-session-name", "s"],
            vec!["assume-role", "--role-arn", ROLE, "--role-session-name", "s", "--duration-seconds", "1h"],
            vec!["assume-role", "--role-arn", ROLE, "--role-session-name", "s", "--duration-seconds", "-5"],
        ] {
            assert_eq!(call(&bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn exports() {
        let response = json!({
            "Credentials": {
                "AccessKeyId": "ASIAEXAMPLE",
                "SecretAccessKey": "wJalr/XUtnFEMI+K7MDENG=",
                "SessionToken": "tok'en with space",
                "Expiration": "2030-01-01T00:00:00Z"
            },
            "AssumedRoleUser": {"Arn": "arn:airlock:sts::0:assumed-role/ops/alice", "AssumedRoleId": "AROA:alice"}
        });
        assert_eq!(
            export_lines(&response).unwrap(),
            "export AWS_ACCESS_KEY_ID=ASIAEXAMPLE\n\
             export AWS_SECRET_ACCESS_KEY=wJalr/XUtnFEMI+K7MDENG=\n\
             export AWS_SESSION_TOKEN='tok'\\''en with space'\n"
        );
    }

    #[test]
    fn exports_refuse_partial_credentials() {
        let err = export_lines(&json!({"Credentials": {"AccessKeyId": "ASIA", "SecretAccessKey": "s"}}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid response to AssumeRole: no Credentials.SessionToken in the response"
        );
        assert!(export_lines(&json!({})).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("AKIA123"), "AKIA123");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("$(rm -rf ~)"), "'$(rm -rf ~)'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
