//! AddTagsToResource, RemoveTagsFromResource and ListTagsForResource on managed instances.

use serde::Deserialize;
use serde_json::json;

use super::{check_tags, instance_arn, ApiError, Op, Tag};
use crate::authz::Gate;

/// The resource a tag call names.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct Resource {
    resource_type: String,
    resource_id: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

/// Authorizes `op` on the instance the request names, then checks it exists; returns its id.
/// The decision comes first, so a caller without the right learns nothing about which
/// instances exist.
async fn resolve(gate: &Gate<'_>, req: &Resource, op: Op) -> Result<String, ApiError> {
    let app = gate.app;
    let mut ctx = gate.context();
    // An instance that does not exist has no tags: the decision cannot depend on existence.
    for (k, v) in app.store.instance_tags(&req.resource_id).await? {
        ctx.insert(&format!("aws:ResourceTag/{k}"), v.clone()).insert(&format!("ssm:resourceTag/{k}"), v);
    }
    let keys: Vec<String> =
        req.tags.iter().map(|t| t.key.clone()).chain(req.tag_keys.iter().cloned()).collect();
    if !keys.is_empty() {
        ctx.insert_multi("aws:TagKeys", keys);
    }
    for t in &req.tags {
        ctx.insert(&format!("aws:RequestTag/{}", t.key), t.value.clone());
    }
    gate.require_in(&ctx, op, &instance_arn(app, &req.resource_id)).await?;
    if req.resource_type != "ManagedInstance" {
        return Err(ApiError::bad(
            "InvalidResourceType",
            format!("resource type {:?} has no tags here; use ManagedInstance", req.resource_type),
        ));
    }
    if app.store.instance(&req.resource_id).await?.is_none() {
        return Err(ApiError::bad(
            "InvalidResourceId",
            format!("{} is not a managed instance", req.resource_id),
        ));
    }
    Ok(req.resource_id.clone())
}

/// Adds or overwrites tags.
pub(super) async fn add(gate: &Gate<'_>, req: Resource) -> Result<serde_json::Value, ApiError> {
    let id = resolve(gate, &req, Op::AddTagsToResource).await?;
    check_tags(&req.tags)?;
    if req.tags.is_empty() {
        return Err(ApiError::bad("ValidationException", "Tags must not be empty"));
    }
    let existing = gate.app.store.instance_tags(&id).await?;
    let new_keys = req.tags.iter().filter(|t| !existing.contains_key(&t.key)).count();
    if existing.len() + new_keys > 50 {
        return Err(ApiError::bad("TooManyTagsError", format!("{id} would have more than 50 tags")));
    }
    let pairs: Vec<(String, String)> = req.tags.into_iter().map(|t| (t.key, t.value)).collect();
    gate.app.store.add_instance_tags(&id, &pairs).await?;
    Ok(json!({}))
}

/// Removes tags by key.
pub(super) async fn remove(gate: &Gate<'_>, req: Resource) -> Result<serde_json::Value, ApiError> {
    let id = resolve(gate, &req, Op::RemoveTagsFromResource).await?;
    gate.app.store.remove_instance_tags(&id, &req.tag_keys).await?;
    Ok(json!({}))
}

/// Lists tags.
pub(super) async fn list(gate: &Gate<'_>, req: Resource) -> Result<serde_json::Value, ApiError> {
    let id = resolve(gate, &req, Op::ListTagsForResource).await?;
    let tags: Vec<Tag> =
        gate.app.store.instance_tags(&id).await?.into_iter().map(|(key, value)| Tag { key, value }).collect();
    Ok(json!({ "TagList": tags }))
}
