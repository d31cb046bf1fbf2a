//! Virtual MFA devices the IAM way: CreateVirtualMFADevice, EnableMFADevice (two consecutive
//! codes), DeactivateMFADevice, ListMFADevices, DeleteVirtualMFADevice.
//!
//! A device's seed is shown once, at creation, and stored sealed under the master key, like
//! access-key secrets (a TOTP check needs the seed itself, so it cannot be hashed).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::{no_such, principal_arn, time, valid_name, On, Page, User};
use crate::api::{ApiError, Op};
use crate::app::{now_us, App};
use crate::authz::Gate;
use crate::store::{Deleted, MfaDevice, PrincipalKind};
use crate::totp;

/// The issuer authenticator apps show beside the account name.
const ISSUER: &str = "Airlock";

/// CreateVirtualMFADevice's input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDevice {
    #[serde(rename = "VirtualMFADeviceName")]
    name: String,
    /// IAM's path; only `/` exists here.
    #[serde(rename = "Path")]
    path: Option<String>,
}

/// EnableMFADevice's members besides `UserName`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnableMembers {
    #[serde(rename = "SerialNumber")]
    serial_number: String,
    #[serde(rename = "AuthenticationCode1")]
    code1: String,
    #[serde(rename = "AuthenticationCode2")]
    code2: String,
}

/// A device's `SerialNumber` alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Serial {
    #[serde(rename = "SerialNumber")]
    serial_number: String,
}

/// ListMFADevices' input: `UserName` is optional (the caller's own devices without it).
pub(crate) struct ListDevices {
    user_name: Option<String>,
    page: Page,
}

impl<'de> Deserialize<'de> for ListDevices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut members = serde_json::Map::<String, Value>::deserialize(d)?;
        let user_name = match members.remove("UserName") {
            Some(Value::String(name)) => Some(name),
            Some(_) => return Err(D::Error::custom("UserName must be a string")),
            None => None,
        };
        let page = Page::deserialize(Value::Object(members)).map_err(D::Error::custom)?;
        Ok(ListDevices { user_name, page })
    }
}

/// `arn:airlock:iam::<account>:mfa/<name>`: the device's `SerialNumber`.
pub(crate) fn mfa_arn(app: &App, name: &str) -> String {
    format!("arn:airlock:iam::{}:mfa/{name}", app.settings.account)
}

/// The `otpauth://` URI an authenticator app reads (what IAM puts in its QR code PNG).
fn otpauth_uri(account: &str, name: &str, seed: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let label = utf8_percent_encode(&format!("{ISSUER}:{name}@{account}"), NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{label}?secret={seed}&issuer={ISSUER}&algorithm=SHA1&digits={}&period={}",
        totp::DIGITS,
        totp::STEP_SECS
    )
}

fn no_device(serial: &str) -> ApiError {
    ApiError::bad("NoSuchEntity", format!("VirtualMFADevice with serial number {serial} does not exist."))
}

fn bad_codes() -> ApiError {
    ApiError::bad("InvalidAuthenticationCode", "Authentication code for device is not valid.")
}

/// A device's TOTP secret, unsealed.
pub(crate) fn secret_of(app: &App, device: &MfaDevice) -> Result<Vec<u8>, ApiError> {
    let seed = app.master.open(&device.seed_sealed).map_err(ApiError::internal)?;
    totp::base32_decode(&seed).ok_or_else(|| ApiError::internal("a stored MFA seed is not base32"))
}

/// CreateVirtualMFADevice: the seed (base32) and its `otpauth://` URI, shown this once.
pub(crate) async fn create_virtual_mfa_device(gate: &Gate<'_>, req: CreateDevice) -> Result<Value, ApiError> {
    gate.require(Op::CreateVirtualMFADevice, &mfa_arn(gate.app, &req.name)).await?;
    let app = gate.app;
    let serial = mfa_arn(app, &req.name);
    if !valid_name(&req.name) {
        return Err(ApiError::bad(
            "InvalidInput",
            format!("{:?} is not a valid device name ([A-Za-z0-9+=,.@_-]{{1,64}})", req.name),
        ));
    }
    if req.path.as_deref().is_some_and(|p| p != "/") {
        return Err(ApiError::bad("InvalidInput", "Path must be / (paths are not supported)"));
    }
    let secret: [u8; totp::SECRET_LEN] = rand::random();
    let seed = totp::base32_encode(&secret);
    let device = MfaDevice {
        serial_number: serial.clone(),
        name: req.name.clone(),
        seed_sealed: app.master.seal(&seed).map_err(ApiError::internal)?,
        created_us: now_us(),
        user_name: None,
        enabled_us: None,
        last_step: 0,
    };
    if !app.store.create_mfa_device(&device).await? {
        return Err(ApiError::bad(
            "EntityAlreadyExists",
            "MFADevice entity at the same path and name already exists.",
        ));
    }
    let uri = otpauth_uri(&app.settings.account, &req.name, &seed);
    Ok(json!({ "VirtualMFADevice": { "SerialNumber": serial, "Base32StringSeed": seed, "OtpAuthUri": uri } }))
}

/// EnableMFADevice: two consecutive codes prove the user's app holds the seed; both are
/// spent, so neither signs in later.
pub(crate) async fn enable_mfa_device(
    gate: &Gate<'_>,
    req: On<User, EnableMembers>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::EnableMFADevice, &req.arn(app)).await?;
    req.existing(app).await?;
    let serial = &req.rest.serial_number;
    let device = app.store.mfa_device(serial).await?.ok_or_else(|| no_device(serial))?;
    let in_use = || ApiError::bad("EntityAlreadyExists", "MFA Device is already in use.");
    if device.user_name.is_some() {
        return Err(in_use());
    }
    let (Some(code1), Some(code2)) = (totp::parse_code(&req.rest.code1), totp::parse_code(&req.rest.code2))
    else {
        return Err(bad_codes());
    };
    let secret = secret_of(app, &device)?;
    let now = totp::step_of(u64::try_from(now_us() / 1_000_000).unwrap_or(0));
    // Code 1 from one of the last few steps and code 2 from the step after it (a user may
    // wait for the app to show the second code; one step of clock skew either way).
    let first = (now.saturating_sub(3)..=now)
        .find(|s| {
            totp::code_at(&secret, *s, totp::DIGITS) == code1
                && totp::code_at(&secret, s + 1, totp::DIGITS) == code2
        })
        .ok_or_else(bad_codes)?;
    let spent = i64::try_from(first + 1).unwrap_or(i64::MAX);
    if !app.store.enable_mfa_device(serial, &req.name, spent, now_us()).await? {
        return Err(in_use());
    }
    tracing::info!(user = %req.name, device = %serial, "MFA device enabled");
    Ok(json!({}))
}

/// DeactivateMFADevice: the device stays, unassigned (DeleteVirtualMFADevice removes it).
pub(crate) async fn deactivate_mfa_device(gate: &Gate<'_>, req: On<User, Serial>) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::DeactivateMFADevice, &req.arn(app)).await?;
    req.existing(app).await?;
    let serial = &req.rest.serial_number;
    if !app.store.deactivate_mfa_device(serial, &req.name).await? {
        return Err(ApiError::bad(
            "NoSuchEntity",
            format!("MFA Device with serial number {serial} is not enabled for user {}.", req.name),
        ));
    }
    Ok(json!({}))
}

/// ListMFADevices: a user's enabled devices (the caller's own without `UserName`).
pub(crate) async fn list_mfa_devices(gate: &Gate<'_>, req: ListDevices) -> Result<Value, ApiError> {
    let app = gate.app;
    let user = req.user_name.clone().or_else(|| gate.caller.user_name().map(str::to_owned));
    // Without a name and from a role session: authorized on every user, then refused.
    let resource = principal_arn(app, PrincipalKind::User, user.as_deref().unwrap_or("*"));
    gate.require(Op::ListMFADevices, &resource).await?;
    let Some(user) = user else {
        return Err(ApiError::bad("ValidationError", "UserName is required when the caller is not a user."));
    };
    if !app.store.principal(&user).await?.is_some_and(|p| p.kind == PrincipalKind::User) {
        return Err(no_such("user", &user));
    }
    let devices: Vec<Value> = app
        .store
        .mfa_devices_of(&user)
        .await?
        .iter()
        .map(|d| json!({ "UserName": user, "SerialNumber": d.serial_number, "EnableDate": d.enabled_us.map(time) }))
        .collect();
    req.page.answer("MFADevices", devices)
}

/// DeleteVirtualMFADevice: refused while the device is enabled for a user.
pub(crate) async fn delete_virtual_mfa_device(gate: &Gate<'_>, req: Serial) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::DeleteVirtualMFADevice, &req.serial_number).await?;
    match app.store.delete_mfa_device(&req.serial_number).await? {
        Deleted::Yes => Ok(json!({})),
        Deleted::NotFound => Err(no_device(&req.serial_number)),
        Deleted::Conflict(m) => Err(ApiError::bad("DeleteConflict", format!("Cannot delete: {m}."))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otpauth_uri_names_issuer_account_and_parameters() {
        let uri = otpauth_uri("123456789012", "alice+phone", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Airlock%3Aalice%2Bphone%40123456789012?secret=JBSWY3DPEHPK3PXP&issuer=Airlock\
             &algorithm=SHA1&digits=6&period=30"
        );
    }
}
