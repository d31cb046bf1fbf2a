//! DescribeInstanceInformation, GetConnectionStatus and DeregisterManagedInstance.

use serde::Deserialize;
use serde_json::json;

use std::collections::{BTreeMap, HashMap};

use super::Op;
use super::{instance_arn, paginate, ApiError};
use crate::app::{now_us, App};
use crate::authz::Gate;
use crate::registry::CLOSE_DEREGISTERED;
use crate::store::Instance;

/// One `InstanceInformationFilterList` entry (lower-case member names, as in SSM).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InfoFilter {
    key: String,
    #[serde(rename = "valueSet")]
    value_set: Vec<String>,
}

/// One `Filters` entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct KeyValues {
    key: String,
    values: Vec<String>,
}

/// DescribeInstanceInformation's input.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub(super) struct DescribeInstances {
    instance_information_filter_list: Vec<InfoFilter>,
    filters: Vec<KeyValues>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// DeregisterManagedInstance's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct DeregisterRequest {
    instance_id: String,
}

/// GetConnectionStatus's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct ConnectionStatus {
    target: String,
}

fn ping_status(app: &App, instance: &Instance) -> &'static str {
    if app.registry.agent(&instance.instance_id).is_some() {
        "Online"
    } else {
        "ConnectionLost"
    }
}

fn field<'a>(
    app: &App,
    i: &'a Instance,
    tags: Option<&'a BTreeMap<String, String>>,
    key: &str,
) -> Result<Vec<&'a str>, ApiError> {
    if let Some(tag) = key.strip_prefix("tag:") {
        return Ok(tags.and_then(|t| t.get(tag)).map(|v| vec![v.as_str()]).unwrap_or_default());
    }
    Ok(match key {
        "tag-key" => tags.map(|t| t.keys().map(String::as_str).collect()).unwrap_or_default(),
        "InstanceIds" => vec![i.instance_id.as_str()],
        "PingStatus" => vec![ping_status(app, i)],
        "AgentVersion" => vec![i.host.agent_version.as_str()],
        "PlatformTypes" => vec![i.host.platform_type.as_str()],
        "ActivationIds" => vec![i.activation_id.as_str()],
        "IamRole" => vec![i.iam_role.as_str()],
        "ResourceType" => vec!["ManagedInstance"],
        other => {
            return Err(ApiError::bad("InvalidFilterKey", format!("filter key {other} is not supported")))
        }
    })
}

/// Lists managed instances with their live status.
pub(super) async fn describe(gate: &Gate<'_>, req: DescribeInstances) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::DescribeInstanceInformation, "*").await?;
    let app = gate.app;
    if let Some(n) = req.max_results {
        if !(5..=50).contains(&n) {
            return Err(ApiError::bad("ValidationException", "MaxResults must be between 5 and 50"));
        }
    }
    let filters: Vec<(&str, &[String])> = req
        .instance_information_filter_list
        .iter()
        .map(|f| (f.key.as_str(), f.value_set.as_slice()))
        .chain(req.filters.iter().map(|f| (f.key.as_str(), f.values.as_slice())))
        .collect();
    const KEYS: [&str; 8] = [
        "InstanceIds",
        "PingStatus",
        "AgentVersion",
        "PlatformTypes",
        "ActivationIds",
        "IamRole",
        "ResourceType",
        "tag-key",
    ];
    // Checked up front, so a bad key is an error even when there is no instance to test.
    if let Some((key, _)) = filters.iter().find(|(k, _)| !k.starts_with("tag:") && !KEYS.contains(k)) {
        return Err(ApiError::bad("InvalidFilterKey", format!("filter key {key} is not supported")));
    }
    for (_, values) in &filters {
        if values.is_empty() {
            return Err(ApiError::bad(
                "InvalidInstanceInformationFilterValue",
                "a filter needs at least one value",
            ));
        }
    }
    let all_tags: HashMap<String, BTreeMap<String, String>> = app.store.all_instance_tags().await?;
    let mut matched = Vec::new();
    for instance in app.store.instances().await? {
        let mut keep = true;
        for (key, values) in &filters {
            let have = field(app, &instance, all_tags.get(&instance.instance_id), key)?;
            keep &= have.iter().any(|h| values.iter().any(|v| v == h));
        }
        if keep {
            matched.push(instance);
        }
    }
    let (page, next) = paginate(matched, req.max_results.unwrap_or(50), req.next_token.as_deref())?;
    let list: Vec<serde_json::Value> = page
        .iter()
        .map(|i| {
            let mut v = json!({
                "InstanceId": i.instance_id,
                "PingStatus": ping_status(app, i),
                "ActivationId": i.activation_id,
                "IamRole": i.iam_role,
                "RegistrationDate": i.registered_us / 1_000_000,
                "ResourceType": "ManagedInstance",
                "Name": i.name,
                "IsLatestVersion": true,
            });
            let host = &i.host;
            for (k, val) in [
                ("AgentVersion", &host.agent_version),
                ("PlatformType", &host.platform_type),
                ("PlatformName", &host.platform_name),
                ("PlatformVersion", &host.platform_version),
                ("ComputerName", &host.computer_name),
                ("IPAddress", &host.ip_address),
            ] {
                if !val.is_empty() {
                    v[k] = json!(val);
                }
            }
            if let Some(p) = i.last_ping_us {
                v["LastPingDateTime"] = json!(p / 1_000_000);
            }
            v
        })
        .collect();
    let mut out = json!({ "InstanceInformationList": list });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// Whether a target's agent is connected now.
pub(super) async fn connection_status(
    gate: &Gate<'_>,
    req: ConnectionStatus,
) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::GetConnectionStatus, &instance_arn(gate.app, &req.target)).await?;
    let app = gate.app;
    let status = if app.registry.agent(&req.target).is_some() { "connected" } else { "notconnected" };
    Ok(json!({ "Target": req.target, "Status": status }))
}

/// Deregisters a managed instance: it leaves DescribeInstanceInformation, its live link is
/// closed at once and none of its certificates is accepted again.
pub(super) async fn deregister(
    gate: &Gate<'_>,
    req: DeregisterRequest,
) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::DeregisterManagedInstance, &instance_arn(gate.app, &req.instance_id)).await?;
    let app = gate.app;
    // The store first: a link accepted meanwhile looks again after it is registered live.
    if !app.store.deregister_instance(&req.instance_id, now_us()).await? {
        return Err(ApiError::bad(
            "InvalidInstanceId",
            format!("Instance {} is not a registered managed instance.", req.instance_id),
        ));
    }
    let was_online =
        app.registry.disconnect_agent(&req.instance_id, CLOSE_DEREGISTERED, b"instance deregistered");
    tracing::info!(instance = %req.instance_id, was_online, "instance deregistered");
    Ok(json!({}))
}
