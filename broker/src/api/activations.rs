//! CreateActivation and RegisterManagedInstance.

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ApiError;
use super::Op;
use crate::app::{now_us, App};
use crate::authz::Gate;
use crate::ca::CaError;
use crate::store::{Activation, ActivationRefusal, Instance};
use airlock_proto::InstanceId;

const DAY_US: i64 = 86_400_000_000;

/// CreateActivation's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct CreateActivation {
    iam_role: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default_instance_name: String,
    registration_limit: Option<i64>,
    /// Epoch seconds (awsJson timestamps may carry a fraction).
    expiration_date: Option<serde_json::Number>,
    /// Stamped on every instance registered with this activation.
    #[serde(default)]
    tags: Vec<super::Tag>,
}

/// RegisterManagedInstance's input (our agent sends a CSR instead of an RSA public key).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct Register {
    activation_id: String,
    activation_code: String,
    csr: String,
    #[serde(default)]
    fingerprint: String,
}

fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

fn timestamp_us(n: &serde_json::Number) -> Option<i64> {
    // Integer seconds are exact; a fractional value keeps microsecond precision by parsing
    // its decimal text rather than going through a float.
    let text = n.to_string();
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let secs: i64 = whole.parse().ok()?;
    let mut micros = String::from(frac);
    micros.truncate(6);
    while micros.len() < 6 {
        micros.push('0');
    }
    let micros: i64 = micros.parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// Creates an activation: the code is shown once, only its hash is kept.
pub(super) async fn create(gate: &Gate<'_>, req: CreateActivation) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::CreateActivation, "*").await?;
    let app = gate.app;
    let iam_role = req.iam_role.filter(|r| !r.is_empty()).ok_or_else(|| {
        ApiError::bad("ValidationException", "1 validation error detected: Value null at 'iamRole' failed to satisfy constraint: Member must not be null")
    })?;
    if iam_role.len() > 64 {
        return Err(ApiError::bad("ValidationException", "IamRole must be at most 64 characters"));
    }
    super::check_tags(&req.tags)?;
    let limit = req.registration_limit.unwrap_or(1);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("ValidationException", "RegistrationLimit must be between 1 and 1000"));
    }
    let now = now_us();
    let expires = match &req.expiration_date {
        None => now + DAY_US,
        Some(n) => timestamp_us(n)
            .ok_or_else(|| ApiError::bad("ValidationException", "ExpirationDate is not a timestamp"))?,
    };
    if expires <= now || expires > now + 30 * DAY_US {
        return Err(ApiError::bad(
            "InvalidParameters",
            "ExpirationDate must be in the future and at most 30 days from now",
        ));
    }
    // Letters and digits only: a code starting with '-' would read as a flag on a command line.
    let code =
        crate::keys::random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 24);
    let activation = Activation {
        activation_id: uuid::Uuid::new_v4().to_string(),
        code_hash: code_hash(&code),
        iam_role,
        description: req.description,
        default_instance_name: req.default_instance_name,
        registration_limit: limit,
        registrations: 0,
        expires_us: expires,
        created_us: now,
        tags: req.tags.into_iter().map(|t| (t.key, t.value)).collect(),
    };
    app.store.insert_activation(&activation).await?;
    Ok(json!({ "ActivationId": activation.activation_id, "ActivationCode": code }))
}

/// DescribeActivations' input.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub(super) struct DescribeActivations {
    filters: Vec<ActivationFilter>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// One DescribeActivations filter.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct ActivationFilter {
    filter_key: String,
    filter_values: Vec<String>,
}

/// DeleteActivation's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct DeleteActivation {
    activation_id: String,
}

/// Lists activations (never their codes).
pub(super) async fn describe(
    gate: &Gate<'_>,
    req: DescribeActivations,
) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::DescribeActivations, "*").await?;
    let app = gate.app;
    let now = now_us();
    let mut list = Vec::new();
    for a in app.store.activations().await? {
        let mut keep = true;
        for f in &req.filters {
            let have = match f.filter_key.as_str() {
                "ActivationIds" => &a.activation_id,
                "DefaultInstanceName" => &a.default_instance_name,
                "IamRole" => &a.iam_role,
                other => {
                    return Err(ApiError::bad(
                        "InvalidFilter",
                        format!("filter key {other} is not supported"),
                    ))
                }
            };
            keep &= f.filter_values.iter().any(|v| v == have);
        }
        if keep {
            let tags: Vec<super::Tag> =
                a.tags.iter().map(|(k, v)| super::Tag { key: k.clone(), value: v.clone() }).collect();
            list.push(json!({
                "ActivationId": a.activation_id, "Description": a.description,
                "DefaultInstanceName": a.default_instance_name, "IamRole": a.iam_role,
                "RegistrationLimit": a.registration_limit, "RegistrationsCount": a.registrations,
                "ExpirationDate": a.expires_us / 1_000_000, "Expired": a.expires_us <= now,
                "CreatedDate": a.created_us / 1_000_000, "Tags": tags,
            }));
        }
    }
    let (page, next) =
        super::paginate(list, req.max_results.unwrap_or(50).clamp(1, 50), req.next_token.as_deref())?;
    let mut out = json!({ "ActivationList": page });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// Deletes an activation; instances it registered stay registered, as in SSM.
pub(super) async fn delete(gate: &Gate<'_>, req: DeleteActivation) -> Result<serde_json::Value, ApiError> {
    gate.require(Op::DeleteActivation, "*").await?;
    let app = gate.app;
    if !app.store.delete_activation(&req.activation_id).await? {
        return Err(ApiError::bad(
            "InvalidActivationId",
            format!("Activation {} does not exist.", req.activation_id),
        ));
    }
    Ok(json!({}))
}

/// Registers an agent: checks and consumes the activation, signs the agent's CSR.
pub(super) async fn register(app: &App, req: Register) -> Result<serde_json::Value, ApiError> {
    let now = now_us();
    // The CSR is checked before the activation is consumed, so a bad request costs no slot.
    let instance_id = InstanceId::generate();
    let issued = app.ca.sign_agent_csr(&req.csr, instance_id.as_str(), now).map_err(|e| match e {
        CaError::BadCsr(m) => ApiError::bad("ValidationException", format!("Csr: {m}")),
        other => ApiError::internal(other),
    })?;
    let activation = match app
        .store
        .consume_activation(&req.activation_id, &code_hash(&req.activation_code), now)
        .await?
    {
        Ok(a) => a,
        Err(refusal) => {
            let message = match refusal {
                ActivationRefusal::NotFound => format!("Activation {} does not exist.", req.activation_id),
                ActivationRefusal::CodeMismatch => {
                    "The activation code does not match the activation id.".to_owned()
                }
                ActivationRefusal::Expired { at_us } => format!(
                    "Activation {} expired at {}.",
                    req.activation_id,
                    chrono::DateTime::from_timestamp_micros(at_us)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ),
                ActivationRefusal::Exhausted { limit } => {
                    format!("Activation {} has reached its registration limit of {limit}.", req.activation_id)
                }
            };
            return Err(ApiError::bad("InvalidActivation", message));
        }
    };
    let name = if activation.default_instance_name.is_empty() {
        req.fingerprint
    } else {
        activation.default_instance_name
    };
    let instance = Instance {
        instance_id: instance_id.to_string(),
        activation_id: activation.activation_id.clone(),
        iam_role: activation.iam_role.clone(),
        name,
        fingerprint: issued.fingerprint,
        registered_us: now,
        last_ping_us: None,
        host: Default::default(),
    };
    app.store.insert_instance(&instance, issued.not_after_us).await?;
    if !activation.tags.is_empty() {
        app.store.add_instance_tags(&instance.instance_id, &activation.tags).await?;
    }
    tracing::info!(instance = %instance_id, "agent registered");
    Ok(json!({
        "InstanceId": instance_id.as_str(),
        "Certificate": issued.pem,
        "CaCertificate": app.ca.cert_pem(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_without_floats() {
        let n = |s: &str| serde_json::from_str::<serde_json::Number>(s).unwrap();
        assert_eq!(timestamp_us(&n("1700000000")), Some(1_700_000_000_000_000));
        assert_eq!(timestamp_us(&n("1700000000.5")), Some(1_700_000_000_500_000));
        assert_eq!(timestamp_us(&n("1.0000019")), Some(1_000_001));
    }
}
