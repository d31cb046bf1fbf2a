//! Who is calling: an access key (long-term or temporary) resolved to its principal.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::app::{now_us, App};
use crate::error::ApiError;
use crate::store::{PrincipalKind, PrincipalRecord};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal whose key signed the request.
    pub principal: PrincipalRecord,
    /// Set when the caller uses temporary credentials from AssumeRole.
    pub role_session: Option<String>,
}

impl Caller {
    /// The ARN requests are attributed to (the assumed-role ARN for role sessions).
    pub fn arn(&self, account: &str) -> String {
        match &self.role_session {
            Some(session) => {
                format!("arn:airlock:sts::{account}:assumed-role/{}/{session}", self.principal.name)
            }
            None => self.principal.arn.clone(),
        }
    }

    /// The name that prefixes this caller's session ids (SSM's rule: user name, or the
    /// role session name).
    pub fn session_prefix(&self) -> &str {
        self.role_session.as_deref().unwrap_or(&self.principal.name)
    }

    /// `aws:userid`: the user id, or `<role id>:<session name>`.
    pub fn user_id(&self) -> String {
        match &self.role_session {
            Some(session) => format!("{}:{session}", self.principal.principal_id),
            None => self.principal.principal_id.clone(),
        }
    }

    /// `aws:username`, which IAM sets for users only.
    pub fn user_name(&self) -> Option<&str> {
        (self.principal.kind == PrincipalKind::User && self.role_session.is_none())
            .then_some(&self.principal.name)
    }

    /// The principal's tags (`aws:PrincipalTag/…`).
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.principal.tags
    }
}

fn unrecognized() -> ApiError {
    ApiError::bad("UnrecognizedClientException", "The security token included in the request is invalid.")
}

/// Resolves an access key id (and the session token header, if any) to its caller once
/// `verify` has accepted the request's signature with the key's secret.
///
/// The signature is checked before anything about the key is refused, so a caller who does
/// not hold the secret learns nothing about which key ids exist: an unknown key is verified
/// against a random decoy secret and fails exactly as a bad signature does, and an inactive
/// or expired key, or a wrong session token, is reported only to a caller who signed with
/// the key's secret.
pub async fn resolve(
    app: &App,
    access_key_id: &str,
    session_token: Option<&str>,
    verify: impl FnOnce(&str) -> Result<(), ApiError>,
) -> Result<Caller, ApiError> {
    let key = app.store.key(access_key_id).await?;
    let secret = match &key {
        Some(key) => app.master.open(&key.secret_sealed).map_err(ApiError::internal)?,
        None => crate::keys::secret(),
    };
    verify(&secret)?;
    // Only reachable for an unknown key if a signer guessed a fresh 240-bit secret.
    let key = key.ok_or_else(unrecognized)?;
    match (&key.token_hash, session_token) {
        (None, None) => {}
        (Some(hash), Some(token)) if *hash == hex::encode(Sha256::digest(token.as_bytes())) => {
            if key.expires_us.is_some_and(|t| t <= now_us()) {
                return Err(ApiError::bad(
                    "ExpiredTokenException",
                    "The security token included in the request is expired",
                ));
            }
        }
        _ => return Err(unrecognized()),
    }
    if !key.active {
        return Err(ApiError::bad("UnrecognizedClientException", "The access key is inactive."));
    }
    let principal = app.store.principal(&key.principal).await?.ok_or_else(unrecognized)?;
    Ok(Caller { principal, role_session: key.session_name })
}

#[cfg(test)]
#[path = "identity_tests.rs"]
pub(crate) mod tests;
