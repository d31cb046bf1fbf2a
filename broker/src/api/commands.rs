//! SendCommand, ListCommands, ListCommandInvocations, GetCommandInvocation and CancelCommand.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use super::commands_json::*;
use super::{document_arn, instance_arn, paginate, ApiError, Op};
use crate::app::now_us;
use crate::authz::Gate;
use crate::run_command::plan::{script_for, Rate, Refusal, PLUGIN, RUN_SHELL_SCRIPT};
use crate::run_command::Event;
use crate::store::{CommandRecord, InvocationRecord, RunStatus};
use airlock_proto::{CommandId, InstanceId};

/// SSM's limits.
const MAX_INSTANCE_IDS: usize = 50;
const MAX_TARGETS: usize = 5;
const MAX_TARGET_VALUES: usize = 50;
const MIN_TIMEOUT_S: i64 = 30;
const MAX_TIMEOUT_S: i64 = 2_592_000;
const DEFAULT_TIMEOUT_S: i64 = 3600;
/// Instances one command may reach at most (a tag can match the whole fleet).
const MAX_RESOLVED: usize = 10_000;

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::bad(r.code, r.message)
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad(code, message.into())
}

/// Parses instance ids, refusing malformed and repeated ones as SSM does.
fn instance_ids(ids: &[String]) -> Result<Vec<String>, ApiError> {
    let mut seen = BTreeSet::new();
    for id in ids {
        id.parse::<InstanceId>().map_err(|e| bad("InvalidInstanceId", e.to_string()))?;
        if !seen.insert(id.as_str()) {
            return Err(bad("DuplicateInstanceId", format!("Instance {id} is listed more than once.")));
        }
    }
    Ok(ids.to_vec())
}

/// The instances a request targets, in a stable order: the ids as listed, else by id.
async fn resolve_targets(gate: &Gate<'_>, req: &SendCommand) -> Result<Vec<String>, ApiError> {
    let app = gate.app;
    let registered: BTreeSet<String> =
        app.store.instances().await?.into_iter().map(|i| i.instance_id).collect();
    match (&req.instance_ids, &req.targets) {
        (Some(_), Some(_)) => Err(bad("InvalidParameters", "give InstanceIds or Targets, not both")),
        (None, None) => Err(bad("InvalidParameters", "InstanceIds or Targets is required")),
        (Some(ids), None) => {
            if ids.is_empty() {
                return Err(bad("InvalidParameters", "InstanceIds or Targets is required"));
            }
            if ids.len() > MAX_INSTANCE_IDS {
                return Err(bad("ValidationException", format!("at most {MAX_INSTANCE_IDS} InstanceIds")));
            }
            let ids = instance_ids(ids)?;
            let missing: Vec<&str> =
                ids.iter().filter(|i| !registered.contains(*i)).map(String::as_str).collect();
            if !missing.is_empty() {
                return Err(bad(
                    "InvalidInstanceId",
                    format!("Instances [{}] not in a valid state for account", missing.join(", ")),
                ));
            }
            Ok(ids)
        }
        (_, Some(targets)) => {
            if targets.is_empty() || targets.len() > MAX_TARGETS {
                return Err(bad("ValidationException", format!("Targets takes 1 to {MAX_TARGETS} entries")));
            }
            let tags = app.store.all_instance_tags().await?;
            let none = BTreeMap::new();
            let mut matched: Option<BTreeSet<String>> = None;
            for t in targets {
                if t.values.is_empty() || t.values.len() > MAX_TARGET_VALUES {
                    return Err(bad(
                        "ValidationException",
                        format!("target {}: 1 to {MAX_TARGET_VALUES} values", t.key),
                    ));
                }
                let these: BTreeSet<String> = if t.key == "InstanceIds" {
                    instance_ids(&t.values)?.into_iter().filter(|i| registered.contains(i)).collect()
                } else if t.key == "tag-key" {
                    registered
                        .iter()
                        .filter(|i| t.values.iter().any(|k| tags.get(*i).unwrap_or(&none).contains_key(k)))
                        .cloned()
                        .collect()
                } else if let Some(key) = t.key.strip_prefix("tag:").filter(|k| !k.is_empty()) {
                    registered
                        .iter()
                        .filter(|i| {
                            tags.get(*i).and_then(|m| m.get(key)).is_some_and(|v| t.values.contains(v))
                        })
                        .cloned()
                        .collect()
                } else {
                    return Err(bad(
                        "InvalidParameters",
                        format!("target key {:?} is not supported (InstanceIds, tag:<key>, tag-key)", t.key),
                    ));
                };
                matched = Some(match matched {
                    None => these,
                    Some(m) => m.intersection(&these).cloned().collect(),
                });
            }
            let found: Vec<String> = matched.unwrap_or_default().into_iter().collect();
            if found.len() > MAX_RESOLVED {
                return Err(bad(
                    "ValidationException",
                    format!("the targets match more than {MAX_RESOLVED} instances"),
                ));
            }
            Ok(found)
        }
    }
}

/// Sends a command: checks it, resolves its targets, authorizes each instance (a denied one
/// fails alone), records everything and hands it to its scheduler.
pub(super) async fn send(gate: &Gate<'_>, req: SendCommand) -> Result<serde_json::Value, ApiError> {
    let app = gate.app;
    let name = req.document_name.rsplit('/').next().unwrap_or(&req.document_name).to_owned();
    let mut ctx = gate.context();
    for (k, values) in &req.parameters {
        ctx.insert_multi(&format!("ssm:DocumentParameters/{k}"), values.clone());
    }
    gate.require_in(&ctx, Op::SendCommand, &document_arn(app, &name)).await?;
    let (script, document_version) = command_script(gate, &name, &req).await?;
    if req.document_hash.is_some() || req.document_hash_type.is_some() {
        return Err(bad("InvalidParameters", "DocumentHash is not supported by this broker"));
    }
    if req.output_s3_bucket_name.is_some()
        || req.output_s3_key_prefix.is_some()
        || req.output_s3_region.is_some()
    {
        return Err(bad("InvalidParameters", "S3 output is not supported by this broker yet"));
    }
    if req
        .cloud_watch_output_config
        .as_ref()
        .is_some_and(|c| c.cloud_watch_output_enabled || c.cloud_watch_log_group_name.is_some())
    {
        return Err(bad("InvalidParameters", "CloudWatch output is not supported by this broker yet"));
    }
    if req.service_role_arn.is_some() {
        return Err(bad(
            "InvalidParameters",
            "notifications (ServiceRoleArn) are not supported by this broker",
        ));
    }
    let timeout_seconds = req.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&timeout_seconds) {
        return Err(bad(
            "ValidationException",
            format!("TimeoutSeconds must be {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S}"),
        ));
    }
    let max_concurrency = req.max_concurrency.clone().unwrap_or_else(|| "50".into());
    let max_errors = req.max_errors.clone().unwrap_or_else(|| "0".into());
    Rate::parse(&max_concurrency, false, "MaxConcurrency")?;
    Rate::parse(&max_errors, true, "MaxErrors")?;
    let comment = req.comment.clone().unwrap_or_default();
    if comment.chars().count() > 100 {
        return Err(bad("ValidationException", "Comment is at most 100 characters"));
    }
    if app.commands.live() >= crate::run_command::MAX_LIVE_COMMANDS {
        return Err(bad(
            "ThrottlingException",
            format!(
                "{} commands are in progress; wait for some to finish",
                crate::run_command::MAX_LIVE_COMMANDS
            ),
        ));
    }
    let targets = resolve_targets(gate, &req).await?;

    let command_id = CommandId::generate();
    let requested_us = now_us();
    let mut invocations = Vec::with_capacity(targets.len());
    for (seq, instance) in targets.iter().enumerate() {
        let mut ctx = ctx.clone();
        for (k, v) in app.store.instance_tags(instance).await? {
            ctx.insert(&format!("ssm:resourceTag/{k}"), v.clone()).insert(&format!("aws:ResourceTag/{k}"), v);
        }
        let mut inv = InvocationRecord {
            command_id: command_id.to_string(),
            instance_id: instance.clone(),
            seq: i64::try_from(seq).unwrap_or(i64::MAX),
            status: Some(RunStatus::Pending),
            status_details: "Pending".into(),
            ..Default::default()
        };
        if let Err(denied) = gate.require_in(&ctx, Op::SendCommand, &instance_arn(app, instance)).await {
            if denied.status.is_server_error() {
                return Err(denied);
            }
            inv.status = Some(RunStatus::Failed);
            inv.status_details = "AccessDenied".into();
            inv.stderr = denied.message;
            inv.ended_us = Some(requested_us);
        }
        invocations.push(inv);
    }
    let record = CommandRecord {
        command_id: command_id.to_string(),
        document_name: name,
        document_version,
        comment,
        parameters: serde_json::to_string(&req.parameters).unwrap_or_else(|_| "{}".into()),
        script: script.script,
        working_directory: script.working_directory,
        execution_timeout_s: i64::from(script.execution_timeout_s),
        instance_ids: serde_json::to_string(&req.instance_ids.clone().unwrap_or_default())
            .unwrap_or_else(|_| "[]".into()),
        targets: serde_json::to_string(&req.targets.clone().unwrap_or_default())
            .unwrap_or_else(|_| "[]".into()),
        requested_us,
        timeout_seconds,
        max_concurrency,
        max_errors,
        status: RunStatus::Pending,
        status_details: "Pending".into(),
        owner_arn: gate.caller.arn(&app.settings.account),
    };
    app.store.insert_command(&record, &invocations).await?;
    tracing::info!(command = %command_id, owner = %record.owner_arn, targets = invocations.len(), "command sent");
    let refs: Vec<&InvocationRecord> = invocations.iter().collect();
    let out = json!({ "Command": command_json(&record, &refs) });
    app.commands.schedule(app.store.clone(), record, invocations);
    Ok(out)
}

/// The script a document makes with the request's parameters, and the document version used:
/// `AWS-RunShellScript`, or a custom Command document (its latest version by default).
async fn command_script(
    gate: &Gate<'_>,
    name: &str,
    req: &SendCommand,
) -> Result<(crate::run_command::plan::Script, String), ApiError> {
    let version = req.document_version.as_deref();
    if name == RUN_SHELL_SCRIPT || name.starts_with("AWS-") {
        if version.is_some_and(|v| !matches!(v, "$DEFAULT" | "$LATEST" | "1")) {
            return Err(bad("InvalidDocumentVersion", format!("{name} has only version 1")));
        }
        return Ok((script_for(name, &req.parameters)?, "1".into()));
    }
    let want = match version {
        None | Some("$DEFAULT" | "$LATEST") => None,
        Some(v) => {
            Some(v.parse::<i64>().map_err(|_| bad("InvalidDocumentVersion", format!("version {v:?}")))?)
        }
    };
    let doc = gate.app.store.document(name, want).await?.filter(|d| d.document_type == "Command");
    let Some(doc) = doc else {
        return Err(bad(
            "InvalidDocument",
            format!("Command document {name} (version {}) does not exist", version.unwrap_or("$DEFAULT")),
        ));
    };
    let parsed = crate::run_command::document::parse(&doc.content)?;
    Ok((parsed.render(&req.parameters)?, doc.version.to_string()))
}

fn parse_command_id(id: &str) -> Result<CommandId, ApiError> {
    id.parse::<CommandId>().map_err(|_| bad("InvalidCommandId", format!("{id:?} is not a command id")))
}

fn page_size(max: Option<usize>) -> Result<usize, ApiError> {
    let max = max.unwrap_or(50);
    if !(1..=50).contains(&max) {
        return Err(bad("ValidationException", "MaxResults must be between 1 and 50"));
    }
    Ok(max)
}

/// Whether a command passes a filter (ListCommands' and ListCommandInvocations' keys).
fn keep(c: &CommandRecord, f: &CommandFilter) -> Result<bool, ApiError> {
    let date = |v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_micros())
            .map_err(|_| bad("InvalidFilterValue", format!("{}: {v:?} is not a date (ISO 8601)", f.key)))
    };
    Ok(match f.key.as_str() {
        "InvokedAfter" => c.requested_us >= date(&f.value)?,
        "InvokedBefore" => c.requested_us <= date(&f.value)?,
        "Status" => c.status.as_str() == f.value,
        "DocumentName" => c.document_name == f.value,
        "ExecutionStage" => match f.value.as_str() {
            "Executing" => !c.status.is_terminal(),
            "Complete" => c.status.is_terminal(),
            other => {
                return Err(bad(
                    "InvalidFilterValue",
                    format!("ExecutionStage {other:?}: Executing or Complete"),
                ))
            }
        },
        other => return Err(bad("InvalidFilterKey", format!("filter key {other} is not supported"))),
    })
}

fn check_filters(filters: &[CommandFilter]) -> Result<(), ApiError> {
    if filters.len() > 5 {
        return Err(bad("ValidationException", "at most 5 filters"));
    }
    const KEYS: [&str; 5] = ["InvokedAfter", "InvokedBefore", "Status", "DocumentName", "ExecutionStage"];
    if let Some(f) = filters.iter().find(|f| !KEYS.contains(&f.key.as_str())) {
        return Err(bad("InvalidFilterKey", format!("filter key {} is not supported", f.key)));
    }
    Ok(())
}

/// Commands and their invocations matching a listing request.
async fn select(
    gate: &Gate<'_>,
    req: &ListCommands,
) -> Result<(Vec<CommandRecord>, Vec<InvocationRecord>), ApiError> {
    let app = gate.app;
    check_filters(&req.filters)?;
    let command_id = req.command_id.as_deref().map(parse_command_id).transpose()?;
    if let Some(i) = &req.instance_id {
        i.parse::<InstanceId>().map_err(|e| bad("InvalidInstanceId", e.to_string()))?;
    }
    let commands = match &command_id {
        Some(id) => match app.store.command(id.as_str()).await? {
            Some(c) => vec![c],
            None => return Err(bad("InvalidCommandId", format!("Command {id} does not exist."))),
        },
        None => app.store.commands(req.instance_id.as_deref()).await?,
    };
    let mut kept = Vec::new();
    for c in commands {
        let mut ok = true;
        for f in &req.filters {
            ok &= keep(&c, f)?;
        }
        if ok {
            kept.push(c);
        }
    }
    let invocations =
        app.store.invocations(command_id.as_ref().map(CommandId::as_str), req.instance_id.as_deref()).await?;
    Ok((kept, invocations))
}

/// Lists commands, newest first.
pub(super) async fn list(gate: &Gate<'_>, req: ListCommands) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::ListCommands, "*").await?;
    if req.details {
        return Err(bad("SerializationException", "ListCommands takes no Details member"));
    }
    let max = page_size(req.max_results)?;
    let (commands, _) = select(gate, &req).await?;
    // Counts cover every invocation, also when the listing is for one instance.
    let all = match &req.command_id {
        Some(id) => gate.app.store.invocations(Some(id), None).await?,
        None => gate.app.store.invocations(None, None).await?,
    };
    let by = by_command(&all);
    let (page, next) = paginate(commands, max, req.next_token.as_deref())?;
    let list: Vec<_> = page
        .iter()
        .map(|c| command_json(c, by.get(c.command_id.as_str()).map(Vec::as_slice).unwrap_or(&[])))
        .collect();
    let mut out = json!({ "Commands": list });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// Lists invocations, newest command first, each command's in target order.
pub(super) async fn list_invocations(
    gate: &Gate<'_>,
    req: ListCommands,
) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::ListCommandInvocations, "*").await?;
    let max = page_size(req.max_results)?;
    let (commands, invocations) = select(gate, &req).await?;
    let commands: HashMap<&str, &CommandRecord> =
        commands.iter().map(|c| (c.command_id.as_str(), c)).collect();
    let rows: Vec<(&CommandRecord, &InvocationRecord)> =
        invocations.iter().filter_map(|i| commands.get(i.command_id.as_str()).map(|c| (*c, i))).collect();
    let (page, next) = paginate(rows, max, req.next_token.as_deref())?;
    let list: Vec<_> = page.iter().map(|(c, i)| invocation_json(c, i, req.details)).collect();
    let mut out = json!({ "CommandInvocations": list });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// One invocation's result.
pub(super) async fn get_invocation(
    gate: &Gate<'_>,
    req: GetInvocation,
) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::GetCommandInvocation, "*").await?;
    let app = gate.app;
    let command_id = parse_command_id(&req.command_id)?;
    req.instance_id.parse::<InstanceId>().map_err(|e| bad("InvalidInstanceId", e.to_string()))?;
    if req.plugin_name.as_deref().is_some_and(|p| p != PLUGIN) {
        return Err(bad("InvalidPluginName", format!("the document's only plugin is {PLUGIN}")));
    }
    let missing = || bad("InvocationDoesNotExist", "The command invocation does not exist.");
    let command = app.store.command(command_id.as_str()).await?.ok_or_else(missing)?;
    let invocations = app.store.invocations(Some(command_id.as_str()), Some(&req.instance_id)).await?;
    let invocation = invocations.first().ok_or_else(missing)?;
    Ok(get_invocation_json(&command, invocation))
}

/// Cancels a command on all its targets or some.
pub(super) async fn cancel(gate: &Gate<'_>, req: CancelCommand) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::CancelCommand, "*").await?;
    let app = gate.app;
    let command_id = parse_command_id(&req.command_id)?;
    let ids = instance_ids(&req.instance_ids)?;
    if ids.len() > MAX_INSTANCE_IDS {
        return Err(bad("ValidationException", format!("at most {MAX_INSTANCE_IDS} InstanceIds")));
    }
    let Some(command) = app.store.command(command_id.as_str()).await? else {
        return Err(bad("InvalidCommandId", format!("Command {command_id} does not exist.")));
    };
    let targets: BTreeSet<String> = app
        .store
        .invocations(Some(command_id.as_str()), None)
        .await?
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    if let Some(other) = ids.iter().find(|i| !targets.contains(*i)) {
        return Err(bad("InvalidInstanceId", format!("{other} is not a target of command {command_id}")));
    }
    let which = (!ids.is_empty()).then_some(ids);
    // A finished command has no scheduler: cancelling it changes nothing, as in SSM.
    let running = app.commands.tell(command_id.as_str(), Event::Cancel(which)).await;
    tracing::info!(command = %command_id, running, status = command.status.as_str(), "cancel requested");
    Ok(json!({}))
}
