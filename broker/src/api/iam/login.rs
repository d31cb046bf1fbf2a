//! Console passwords the IAM way: CreateLoginProfile, UpdateLoginProfile, DeleteLoginProfile,
//! GetLoginProfile, and ChangePassword for a user's own password.
//!
//! Passwords are checked against the policy, hashed with argon2id off the runtime, and never
//! logged, audited or returned.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{time, Nothing, On, User};
use crate::api::{ApiError, Op};
use crate::app::now_us;
use crate::authz::Gate;
use crate::password;
use crate::store::LoginProfile;

/// CreateLoginProfile's members besides `UserName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct CreateProfile {
    password: String,
    #[serde(default)]
    password_reset_required: bool,
}

/// UpdateLoginProfile's members besides `UserName`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct UpdateProfile {
    password: Option<String>,
    password_reset_required: Option<bool>,
}

/// ChangePassword: the caller's own password.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct ChangePassword {
    old_password: String,
    new_password: String,
}

fn no_profile(user: &str) -> ApiError {
    ApiError::bad("NoSuchEntity", format!("Login Profile for User {user} cannot be found."))
}

fn profile_json(p: &LoginProfile) -> Value {
    json!({ "LoginProfile": { "UserName": p.user_name, "CreateDate": time(p.created_us),
        "PasswordResetRequired": p.password_reset_required } })
}

/// The password's hash once it passes the policy.
async fn checked_hash(user: &str, password: String) -> Result<String, ApiError> {
    password::check_policy(user, &password).map_err(|m| ApiError::bad("PasswordPolicyViolation", m))?;
    password::hash(password).await.map_err(ApiError::internal)
}

/// CreateLoginProfile.
pub(crate) async fn create_login_profile(
    gate: &Gate<'_>,
    req: On<User, CreateProfile>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::CreateLoginProfile, &req.arn(app)).await?;
    req.existing(app).await?;
    let exists = || {
        ApiError::bad("EntityAlreadyExists", format!("Login Profile for user {} already exists.", req.name))
    };
    // Checked before the (slow) hash; the insert below settles a race.
    if app.store.login_profile(&req.name).await?.is_some() {
        return Err(exists());
    }
    let profile = LoginProfile {
        user_name: req.name.clone(),
        password_hash: checked_hash(&req.name, req.rest.password).await?,
        password_reset_required: req.rest.password_reset_required,
        created_us: now_us(),
    };
    if !app.store.create_login_profile(&profile).await? {
        return Err(exists());
    }
    tracing::info!(user = %req.name, "login profile created");
    Ok(profile_json(&profile))
}

/// UpdateLoginProfile: a new password ends the user's console sessions.
pub(crate) async fn update_login_profile(
    gate: &Gate<'_>,
    req: On<User, UpdateProfile>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::UpdateLoginProfile, &req.arn(app)).await?;
    req.existing(app).await?;
    if app.store.login_profile(&req.name).await?.is_none() {
        return Err(no_profile(&req.name));
    }
    let hash = match req.rest.password {
        Some(p) => Some(checked_hash(&req.name, p).await?),
        None => None,
    };
    if !app.store.update_login_profile(&req.name, hash.as_deref(), req.rest.password_reset_required).await? {
        return Err(no_profile(&req.name));
    }
    if hash.is_some() {
        app.console.end_sessions_of(&req.name);
    }
    Ok(json!({}))
}

/// DeleteLoginProfile: the user can no longer sign in, and is signed out.
pub(crate) async fn delete_login_profile(gate: &Gate<'_>, req: On<User, Nothing>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::DeleteLoginProfile, &req.arn(app)).await?;
    req.existing(app).await?;
    if !app.store.delete_login_profile(&req.name).await? {
        return Err(no_profile(&req.name));
    }
    app.console.end_sessions_of(&req.name);
    Ok(json!({}))
}

/// GetLoginProfile: whether the user has a password, never the password.
pub(crate) async fn get_login_profile(gate: &Gate<'_>, req: On<User, Nothing>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::GetLoginProfile, &req.arn(app)).await?;
    req.existing(app).await?;
    let profile = app.store.login_profile(&req.name).await?.ok_or_else(|| no_profile(&req.name))?;
    Ok(profile_json(&profile))
}

/// ChangePassword: an IAM user replaces its own password (and clears a required reset).
/// Wrong old passwords count towards the sign-in slow-down of the user.
pub(crate) async fn change_password(gate: &Gate<'_>, req: ChangePassword) -> Result<Value, ApiError> {
    gate.require(Op::ChangePassword, &gate.caller.principal.arn).await?;
    let app = gate.app;
    let Some(user) = gate.caller.user_name() else {
        return Err(ApiError::bad("InvalidUserType", "Only IAM users can change their own password."));
    };
    let ip = gate.facts.source_ip;
    if let Some(wait) = app.console.throttled(user, ip) {
        return Err(crate::console::throttled_error(wait));
    }
    let profile = app.store.login_profile(user).await?.ok_or_else(|| no_profile(user))?;
    let ok = password::verify(Some(profile.password_hash), req.old_password.clone())
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        app.console.failed(user, ip);
        return Err(ApiError::bad("InvalidInput", "The old password is incorrect."));
    }
    if req.new_password == req.old_password {
        return Err(ApiError::bad(
            "PasswordPolicyViolation",
            "The new password must differ from the old one.",
        ));
    }
    let hash = checked_hash(user, req.new_password).await?;
    if !app.store.update_login_profile(user, Some(&hash), Some(false)).await? {
        return Err(no_profile(user));
    }
    app.console.password_changed(user);
    Ok(json!({}))
}
