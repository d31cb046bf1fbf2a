//! `airlock send-command`, `list-commands`, `list-command-invocations`,
//! `get-command-invocation` and `cancel-command`: Run Command with the AWS CLI's flags, and
//! `send-command --wait`, which follows each target until the command is done.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};

use crate::api::{Client, Service};
use crate::call::ApiCall;
use crate::params::{self, Parameters};

/// How soon `--wait` looks at the invocations again: first after 50 ms (most commands are
/// quick, and a second's poll would be most of their wall time), doubling up to once a second.
const FIRST_POLL: Duration = Duration::from_millis(50);
/// The slowest `--wait` polls, for long commands.
const POLL: Duration = Duration::from_secs(1);

/// `send-command`.
#[derive(Debug, Args)]
pub struct SendCommandArgs {
    /// The Command document, e.g. AWS-RunShellScript.
    #[arg(long)]
    pub document_name: String,
    /// The document version ($DEFAULT, $LATEST or a number).
    #[arg(long)]
    pub document_version: Option<String>,
    /// Managed instances to run on (up to 50).
    #[arg(long, num_args = 1.., value_name = "ID")]
    pub instance_ids: Vec<String>,
    /// Targets: `Key=tag:Environment,Values=Production` (also `tag-key`, `InstanceIds`), or JSON.
    #[arg(long, num_args = 1.., value_parser = params::parse_instance_filter)]
    pub targets: Vec<Vec<Value>>,
    /// Document parameters: `commands=uptime`, or JSON (`{"commands":["uptime","df -h"]}`).
    #[arg(long, value_parser = params::parse_parameters)]
    pub parameters: Option<Parameters>,
    /// Delivery timeout: seconds an offline agent has to connect and start the command.
    #[arg(long, value_name = "SECONDS")]
    pub timeout_seconds: Option<i64>,
    /// A comment recorded with the command.
    #[arg(long)]
    pub comment: Option<String>,
    /// Targets running at once: a number or a percentage (default 50).
    #[arg(long)]
    pub max_concurrency: Option<String>,
    /// Errors allowed before invocations not yet started are stopped (default 0).
    #[arg(long)]
    pub max_errors: Option<String>,
    /// Follow the invocations until the command is done; exit non-zero if any did not succeed.
    #[arg(long)]
    pub wait: bool,
}

impl SendCommandArgs {
    /// The SendCommand request.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("DocumentName".into(), json!(self.document_name));
        let mut opt = |name: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(name.into(), v);
            }
        };
        opt("DocumentVersion", self.document_version.clone().map(Value::from));
        opt("InstanceIds", (!self.instance_ids.is_empty()).then(|| json!(self.instance_ids)));
        let targets: Vec<Value> = self.targets.iter().flatten().cloned().collect();
        opt("Targets", (!targets.is_empty()).then_some(Value::Array(targets)));
        opt("Parameters", self.parameters.as_ref().map(params::parameters_json));
        opt("TimeoutSeconds", self.timeout_seconds.map(Value::from));
        opt("Comment", self.comment.clone().map(Value::from));
        opt("MaxConcurrency", self.max_concurrency.clone().map(Value::from));
        opt("MaxErrors", self.max_errors.clone().map(Value::from));
        Value::Object(body)
    }
}

/// `list-commands` and `list-command-invocations`.
#[derive(Debug, Args)]
pub struct ListCommandsArgs {
    /// Only this command.
    #[arg(long, value_name = "ID")]
    pub command_id: Option<String>,
    /// Only commands on this instance.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Filters: `key=Status,value=Success` (several allowed), or JSON.
    #[arg(long, num_args = 1.., value_parser = params::parse_session_filter)]
    pub filters: Vec<Vec<Value>>,
    /// Maximum items per page (1 to 50).
    #[arg(long, value_name = "N")]
    pub max_results: Option<i64>,
    /// Token from a previous page's NextToken.
    #[arg(long, value_name = "TOKEN")]
    pub next_token: Option<String>,
}

impl ListCommandsArgs {
    /// The request; `details` only for list-command-invocations.
    pub fn call(&self, operation: &'static str, details: bool) -> ApiCall {
        let mut body = Map::new();
        for (name, v) in [
            ("CommandId", self.command_id.clone().map(Value::from)),
            ("InstanceId", self.instance_id.clone().map(Value::from)),
            ("MaxResults", self.max_results.map(Value::from)),
            ("NextToken", self.next_token.clone().map(Value::from)),
        ] {
            if let Some(v) = v {
                body.insert(name.into(), v);
            }
        }
        let filters: Vec<Value> = self.filters.iter().flatten().cloned().collect();
        if !filters.is_empty() {
            body.insert("Filters".into(), Value::Array(filters));
        }
        if details {
            body.insert("Details".into(), json!(true));
        }
        ApiCall::new(Service::Ssm, operation, Value::Object(body))
    }
}

/// What `--wait` shows of one invocation.
fn progress(i: &Value) -> String {
    let status = i["Status"].as_str().unwrap_or("?");
    let stage = match status {
        "Pending" | "Delayed" => "pending",
        "InProgress" | "Cancelling" => "running",
        _ => "done",
    };
    let mut line = format!("{}  {stage:<7}  {status}", i["InstanceId"].as_str().unwrap_or("?"));
    let details = i["StatusDetails"].as_str().unwrap_or("");
    if details != status && !details.is_empty() {
        line.push_str(&format!(" ({details})"));
    }
    if let Some(code) = i["CommandPlugins"][0]["ResponseCode"].as_i64().filter(|_| stage == "done") {
        if code >= 0 {
            line.push_str(&format!("  exit {code}"));
        }
    }
    line
}

/// Every invocation of a command, all pages.
async fn all_invocations(client: &Client, command_id: &str) -> Result<Vec<Value>, crate::ApiError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"CommandId": command_id, "Details": true, "MaxResults": 50});
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = client.call("ListCommandInvocations", &body).await?;
        out.extend(page["CommandInvocations"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(out),
        }
    }
}

/// `send-command --wait`: sends, prints a line per target each time its state changes, and
/// returns 0 only if every invocation succeeded.
pub async fn send_and_wait(client: &Client, body: &Value, out: &mut dyn Write) -> anyhow::Result<i32> {
    let sent = client.call("SendCommand", body).await?;
    let command_id = sent["Command"]["CommandId"].as_str().unwrap_or_default().to_owned();
    writeln!(out, "CommandId {command_id}")?;
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut poll = FIRST_POLL;
    loop {
        // The command's status first: invocations read after it show every final state.
        let listed = client.call("ListCommands", &json!({"CommandId": command_id})).await?;
        let command = &listed["Commands"][0];
        let status = command["Status"].as_str().unwrap_or("");
        let invocations = all_invocations(client, &command_id).await?;
        for i in &invocations {
            let line = progress(i);
            let id = i["InstanceId"].as_str().unwrap_or("?").to_owned();
            if shown.get(&id) != Some(&line) {
                writeln!(out, "{line}")?;
                shown.insert(id, line);
            }
        }
        out.flush()?;
        if matches!(status, "Success" | "Failed" | "TimedOut" | "Cancelled") {
            let failed = invocations.iter().filter(|i| i["Status"] != "Success").count();
            writeln!(
                out,
                "{status}: {} targets, {} completed, {} errors, {} delivery timed out",
                command["TargetCount"],
                command["CompletedCount"],
                command["ErrorCount"],
                command["DeliveryTimedOutCount"]
            )?;
            return Ok(if failed == 0 && status == "Success" { 0 } else { crate::EXIT_FAILURE });
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let i = json!({"InstanceId": "mi-0123456789abcdef0", "Status": "Failed", "StatusDetails": "Failed",
            "CommandPlugins": [{"ResponseCode": 3}]});
        assert_eq!(progress(&i), "mi-0123456789abcdef0  done     Failed  exit 3");
        let i = json!({"InstanceId": "mi-0123456789abcdef0", "Status": "Delayed", "StatusDetails": "Delayed",
            "CommandPlugins": [{"ResponseCode": -1}]});
        assert_eq!(progress(&i), "mi-0123456789abcdef0  pending  Delayed");
        let i = json!({"InstanceId": "mi-0123456789abcdef0", "Status": "TimedOut",
            "StatusDetails": "DeliveryTimedOut", "CommandPlugins": [{"ResponseCode": -1}]});
        assert_eq!(progress(&i), "mi-0123456789abcdef0  done     TimedOut (DeliveryTimedOut)");
    }
}
