//! Users and roles: create, get, delete, list, tag and untag.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_such, principal_json, tags_of, valid_name, Kind, Nothing, On, Page, Role, User};
use crate::api::{ApiError, Op, Tag};
use crate::app::now_us;
use crate::authz::Gate;
use crate::keys;
use crate::store::{Deleted, PrincipalKind, PrincipalRecord};

/// CreateUser's members besides `UserName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct CreateUser {
    tags: Option<Vec<Tag>>,
}

/// CreateRole's members besides `RoleName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct CreateRole {
    tags: Option<Vec<Tag>>,
    description: Option<String>,
    /// Who may assume the role; absent: the account (callers' own policies decide).
    assume_role_policy_document: Option<String>,
}

/// UpdateAssumeRolePolicy's members besides `RoleName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct TrustMembers {
    policy_document: String,
}

/// TagUser's and TagRole's members besides the name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct TagMembers {
    tags: Vec<Tag>,
}

/// UntagUser's and UntagRole's members besides the name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct UntagMembers {
    tag_keys: Vec<String>,
}

/// Creates the principal a request names, once its operation is authorized.
async fn create<K: Kind, T>(gate: &Gate<'_>, req: &On<K, T>, tags: Vec<Tag>) -> Result<Value, ApiError> {
    let app = gate.app;
    if !valid_name(&req.name) {
        return Err(ApiError::bad(
            "InvalidInput",
            format!("{:?} is not a valid name ([A-Za-z0-9+=,.@_-]{{1,64}})", req.name),
        ));
    }
    let record = PrincipalRecord {
        arn: req.arn(app),
        name: req.name.clone(),
        kind: K::KIND,
        principal_id: keys::principal_id(K::KIND),
        tags: tags.into_iter().map(|t| (t.key, t.value)).collect(),
        created_us: now_us(),
    };
    if !app.store.create_principal(&record).await? {
        return Err(ApiError::bad(
            "EntityAlreadyExists",
            format!("A user or role named {} already exists.", record.name),
        ));
    }
    tracing::info!(principal = %record.arn, "principal created");
    let key = if K::KIND == PrincipalKind::User { "User" } else { "Role" };
    Ok(json!({ key: principal_json(&record) }))
}

/// CreateUser.
pub(crate) async fn create_user(gate: &Gate<'_>, req: On<User, CreateUser>) -> Result<Value, ApiError> {
    gate.require(Op::CreateUser, &req.arn(gate.app)).await?;
    let tags = tags_of(req.rest.tags.clone())?;
    create(gate, &req, tags).await
}

/// CreateRole.
pub(crate) async fn create_role(gate: &Gate<'_>, req: On<Role, CreateRole>) -> Result<Value, ApiError> {
    gate.require(Op::CreateRole, &req.arn(gate.app)).await?;
    let tags = tags_of(req.rest.tags.clone())?;
    if req.rest.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        return Err(ApiError::bad("ValidationError", "Description is at most 1000 characters"));
    }
    if let Some(doc) = &req.rest.assume_role_policy_document {
        super::trust::check(gate.app, doc)?;
    }
    let mut created = create(gate, &req, tags).await?;
    if let Some(doc) = &req.rest.assume_role_policy_document {
        gate.app.store.set_trust_policy(&req.name, doc).await?;
    }
    created["Role"]["AssumeRolePolicyDocument"] =
        json!(super::trust::role_trust_text(gate.app, &req.name).await?);
    Ok(created)
}

/// UpdateAssumeRolePolicy: replaces who may assume a role.
pub(crate) async fn update_assume_role_policy(
    gate: &Gate<'_>,
    req: On<Role, TrustMembers>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::UpdateAssumeRolePolicy, &req.arn(app)).await?;
    req.existing(app).await?;
    super::trust::check(app, &req.rest.policy_document)?;
    if !app.store.set_trust_policy(&req.name, &req.rest.policy_document).await? {
        return Err(no_such("role", &req.name));
    }
    Ok(json!({}))
}

/// GetUser / GetRole.
pub(crate) async fn get_principal<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, Nothing>,
) -> Result<Value, ApiError> {
    gate.require(op, &req.arn(gate.app)).await?;
    let p = req.existing(gate.app).await?;
    if K::KIND == PrincipalKind::User {
        return Ok(json!({ "User": principal_json(&p) }));
    }
    let mut role = principal_json(&p);
    role["AssumeRolePolicyDocument"] = json!(super::trust::role_trust_text(gate.app, &p.name).await?);
    Ok(json!({ "Role": role }))
}

/// DeleteUser / DeleteRole: refused while the principal still has keys or policies.
pub(crate) async fn delete_principal<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, Nothing>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    match app.store.delete_principal(&req.name).await? {
        Deleted::Yes => Ok(json!({})),
        Deleted::NotFound => Err(no_such(K::KIND.as_str(), &req.name)),
        Deleted::Conflict(m) => Err(ApiError::bad("DeleteConflict", format!("Cannot delete: {m}."))),
    }
}

/// ListUsers / ListRoles.
pub(crate) async fn list_principals(
    gate: &Gate<'_>,
    op: Op,
    kind: PrincipalKind,
    page: Page,
) -> Result<Value, ApiError> {
    gate.require(op, "*").await?;
    let all: Vec<Value> = gate.app.store.principals(kind).await?.iter().map(principal_json).collect();
    page.answer(if kind == PrincipalKind::User { "Users" } else { "Roles" }, all)
}

/// TagUser / TagRole.
pub(crate) async fn tag_principal<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, TagMembers>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    super::super::check_tags(&req.rest.tags)?;
    let mut tags: BTreeMap<String, String> = req.existing(app).await?.tags;
    tags.extend(req.rest.tags.iter().map(|t| (t.key.clone(), t.value.clone())));
    if tags.len() > 50 {
        return Err(ApiError::bad("LimitExceeded", format!("{} would have more than 50 tags", req.name)));
    }
    app.store.set_principal_tags(&req.name, &tags).await?;
    Ok(json!({}))
}

/// UntagUser / UntagRole.
pub(crate) async fn untag_principal<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, UntagMembers>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    let mut tags = req.existing(app).await?.tags;
    for k in &req.rest.tag_keys {
        tags.remove(k);
    }
    app.store.set_principal_tags(&req.name, &tags).await?;
    Ok(json!({}))
}
