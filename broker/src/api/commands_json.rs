//! Run Command's request members and its response shapes, as SSM spells them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::run_command::plan::PLUGIN;
use crate::store::{CommandRecord, InvocationRecord, RunStatus};

/// One `Targets` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct Target {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// `CloudWatchOutputConfig`; only "off" is served.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct CloudWatchOutput {
    #[serde(default)]
    pub cloud_watch_log_group_name: Option<String>,
    #[serde(default)]
    pub cloud_watch_output_enabled: bool,
}

/// SendCommand's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct SendCommand {
    pub document_name: String,
    #[serde(default)]
    pub document_version: Option<String>,
    #[serde(default)]
    pub document_hash: Option<String>,
    #[serde(default)]
    pub document_hash_type: Option<String>,
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    #[serde(default)]
    pub targets: Option<Vec<Target>>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub parameters: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub max_concurrency: Option<String>,
    #[serde(default)]
    pub max_errors: Option<String>,
    #[serde(default)]
    pub output_s3_region: Option<String>,
    #[serde(default)]
    pub output_s3_bucket_name: Option<String>,
    #[serde(default)]
    pub output_s3_key_prefix: Option<String>,
    #[serde(default)]
    pub cloud_watch_output_config: Option<CloudWatchOutput>,
    #[serde(default)]
    pub service_role_arn: Option<String>,
}

/// A ListCommands / ListCommandInvocations filter (lower-case members, as in SSM).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandFilter {
    pub key: String,
    pub value: String,
}

/// ListCommands' and ListCommandInvocations' input.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub(super) struct ListCommands {
    pub command_id: Option<String>,
    pub instance_id: Option<String>,
    pub max_results: Option<usize>,
    pub next_token: Option<String>,
    pub filters: Vec<CommandFilter>,
    /// ListCommandInvocations only: include `CommandPlugins`.
    pub details: bool,
}

/// GetCommandInvocation's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct GetInvocation {
    pub command_id: String,
    pub instance_id: String,
    #[serde(default)]
    pub plugin_name: Option<String>,
}

/// CancelCommand's input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct CancelCommand {
    pub command_id: String,
    #[serde(default)]
    pub instance_ids: Vec<String>,
}

/// ISO 8601 with milliseconds, as GetCommandInvocation's date strings are.
fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Epoch seconds, a number as the rest of the API's timestamps.
fn epoch(us: i64) -> Value {
    json!(us.div_euclid(1_000_000))
}

/// The counts of a command's invocations: target, completed, error, delivery timed out.
fn counts(invocations: &[&InvocationRecord]) -> (usize, usize, usize, usize) {
    let completed = invocations.iter().filter(|i| i.status().is_terminal()).count();
    let errors = invocations
        .iter()
        .filter(|i| {
            i.status() == RunStatus::Failed
                || (i.status() == RunStatus::TimedOut && i.status_details == "ExecutionTimedOut")
        })
        .count();
    let delivery = invocations.iter().filter(|i| i.status_details == "DeliveryTimedOut").count();
    (invocations.len(), completed, errors, delivery)
}

/// A `Command` object.
pub(super) fn command_json(c: &CommandRecord, invocations: &[&InvocationRecord]) -> Value {
    let parameters: Value = serde_json::from_str(&c.parameters).unwrap_or_else(|_| json!({}));
    let instance_ids: Value = serde_json::from_str(&c.instance_ids).unwrap_or_else(|_| json!([]));
    let targets: Value = serde_json::from_str(&c.targets).unwrap_or_else(|_| json!([]));
    let (target_count, completed, errors, delivery) = counts(invocations);
    json!({
        "CommandId": c.command_id,
        "DocumentName": c.document_name,
        "DocumentVersion": c.document_version,
        "Comment": c.comment,
        "ExpiresAfter": epoch(c.requested_us.saturating_add(c.timeout_seconds.saturating_mul(1_000_000))),
        "Parameters": parameters,
        "InstanceIds": instance_ids,
        "Targets": targets,
        "RequestedDateTime": epoch(c.requested_us),
        "Status": c.status.as_str(),
        "StatusDetails": c.status_details,
        "OutputS3Region": "",
        "OutputS3BucketName": "",
        "OutputS3KeyPrefix": "",
        "MaxConcurrency": c.max_concurrency,
        "MaxErrors": c.max_errors,
        "TargetCount": target_count,
        "CompletedCount": completed,
        "ErrorCount": errors,
        "DeliveryTimedOutCount": delivery,
        "ServiceRole": "",
        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
        "TimeoutSeconds": c.timeout_seconds,
    })
}

/// The plugin's `Output` in listings: standard output then standard error, cut at SSM's
/// 2,500 characters.
fn plugin_output(i: &InvocationRecord) -> String {
    let mut out = i.stdout.clone();
    if !i.stderr.is_empty() {
        out.push_str("\n\n----------ERROR-------\n");
        out.push_str(&i.stderr);
    }
    out.chars().take(2500).collect()
}

/// A `CommandInvocation` object.
pub(super) fn invocation_json(c: &CommandRecord, i: &InvocationRecord, details: bool) -> Value {
    let mut plugins = Vec::new();
    if details {
        let mut p = json!({
            "Name": PLUGIN,
            "Status": i.status().as_str(),
            "StatusDetails": i.status_details,
            "ResponseCode": i.exit_code.unwrap_or(-1),
            "Output": plugin_output(i),
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
            "OutputS3Region": "",
            "OutputS3BucketName": "",
            "OutputS3KeyPrefix": "",
        });
        if let Some(s) = i.started_us {
            p["ResponseStartDateTime"] = epoch(s);
        }
        if let Some(e) = i.ended_us {
            p["ResponseFinishDateTime"] = epoch(e);
        }
        plugins.push(p);
    }
    json!({
        "CommandId": c.command_id,
        "InstanceId": i.instance_id,
        "InstanceName": "",
        "Comment": c.comment,
        "DocumentName": c.document_name,
        "DocumentVersion": c.document_version,
        "RequestedDateTime": epoch(c.requested_us),
        "Status": i.status().as_str(),
        "StatusDetails": i.status_details,
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": plugins,
        "ServiceRole": "",
        "NotificationConfig": {"NotificationArn": "", "NotificationEvents": [], "NotificationType": ""},
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
    })
}

/// GetCommandInvocation's answer.
pub(super) fn get_invocation_json(c: &CommandRecord, i: &InvocationRecord) -> Value {
    let elapsed = match (i.started_us, i.ended_us) {
        (Some(s), Some(e)) if e >= s => {
            let ms = (e - s) / 1000;
            format!("PT{}.{:03}S", ms / 1000, ms % 1000)
        }
        _ => String::new(),
    };
    json!({
        "CommandId": c.command_id,
        "InstanceId": i.instance_id,
        "Comment": c.comment,
        "DocumentName": c.document_name,
        "DocumentVersion": c.document_version,
        "PluginName": PLUGIN,
        "ResponseCode": i.exit_code.unwrap_or(-1),
        "ExecutionStartDateTime": i.started_us.map(iso).unwrap_or_default(),
        "ExecutionElapsedTime": elapsed,
        "ExecutionEndDateTime": i.ended_us.filter(|_| i.started_us.is_some()).map(iso).unwrap_or_default(),
        "Status": i.status().as_str(),
        "StatusDetails": i.status_details,
        "StandardOutputContent": i.stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": i.stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
    })
}

/// The invocations of each command, by command id.
pub(super) fn by_command(invocations: &[InvocationRecord]) -> BTreeMap<&str, Vec<&InvocationRecord>> {
    let mut map: BTreeMap<&str, Vec<&InvocationRecord>> = BTreeMap::new();
    for i in invocations {
        map.entry(i.command_id.as_str()).or_default().push(i);
    }
    map
}
