//! A user's access keys: create (at most two), list, activate or deactivate, delete.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{time, Nothing, On, User};
use crate::api::{ApiError, Op};
use crate::authz::Gate;
use crate::keys;

/// UpdateAccessKey's members besides `UserName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct UpdateKey {
    access_key_id: String,
    status: String,
}

/// DeleteAccessKey's members besides `UserName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct DeleteKey {
    access_key_id: String,
}

fn no_such_key(id: &str) -> ApiError {
    ApiError::bad("NoSuchEntity", format!("The Access Key with id {id} cannot be found."))
}

/// CreateAccessKey: the secret is shown once.
pub(crate) async fn create_access_key(gate: &Gate<'_>, req: On<User, Nothing>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::CreateAccessKey, &req.arn(app)).await?;
    req.existing(app).await?;
    let name = &req.name;
    if app.store.keys_of(name).await?.len() >= 2 {
        return Err(ApiError::bad("LimitExceeded", format!("{name} already has 2 access keys.")));
    }
    let key = keys::mint(app.store.as_ref(), &app.master, name).await.map_err(ApiError::internal)?;
    Ok(json!({ "AccessKey": { "UserName": name, "AccessKeyId": key.access_key_id, "Status": "Active",
        "SecretAccessKey": key.secret, "CreateDate": time(key.created_us) } }))
}

/// ListAccessKeys: ids and status, never secrets.
pub(crate) async fn list_access_keys(gate: &Gate<'_>, req: On<User, Nothing>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::ListAccessKeys, &req.arn(app)).await?;
    req.existing(app).await?;
    let list: Vec<Value> = app
        .store
        .keys_of(&req.name)
        .await?
        .iter()
        .map(|k| {
            json!({ "UserName": req.name, "AccessKeyId": k.access_key_id,
            "Status": if k.active { "Active" } else { "Inactive" }, "CreateDate": time(k.created_us) })
        })
        .collect();
    Ok(json!({ "AccessKeyMetadata": list, "IsTruncated": false }))
}

/// UpdateAccessKey: `Active` or `Inactive`.
pub(crate) async fn update_access_key(gate: &Gate<'_>, req: On<User, UpdateKey>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::UpdateAccessKey, &req.arn(app)).await?;
    req.existing(app).await?;
    let active = match req.rest.status.as_str() {
        "Active" => true,
        "Inactive" => false,
        other => {
            return Err(ApiError::bad("InvalidInput", format!("Status {other:?} must be Active or Inactive")))
        }
    };
    let id = &req.rest.access_key_id;
    if !app.store.set_key_active(&req.name, id, active).await? {
        return Err(no_such_key(id));
    }
    Ok(json!({}))
}

/// DeleteAccessKey.
pub(crate) async fn delete_access_key(gate: &Gate<'_>, req: On<User, DeleteKey>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::DeleteAccessKey, &req.arn(app)).await?;
    req.existing(app).await?;
    let id = &req.rest.access_key_id;
    if !app.store.delete_key(&req.name, id).await? {
        return Err(no_such_key(id));
    }
    Ok(json!({}))
}
