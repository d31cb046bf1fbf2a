//! SigV4 in the query string (a presigned URL): the same signature as the header form, with
//! the credential, date, lifetime and signed headers in `X-Amz-*` query parameters and the
//! signature itself left out of the canonical query.

use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use super::{canonical_query, canonical_uri, constant_time_eq, header_value, hmac, Authorization, SigError};
use super::{check_service, SignedParts, ALGORITHM, MAX_SKEW_SECS};

/// Longest lifetime a presigned URL may claim (7 days, as AWS allows).
pub(super) const MAX_EXPIRES_SECS: i64 = 604_800;

/// The signing parameters of a presigned URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// Credential scope, signed headers and signature, as the header form has them.
    pub authorization: Authorization,
    /// `X-Amz-Security-Token`, for temporary credentials.
    pub security_token: Option<String>,
    /// `X-Amz-Date`.
    pub amz_date: String,
    /// `X-Amz-Expires`, seconds.
    pub expires_secs: i64,
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
    })
}

/// Reads the `X-Amz-*` parameters of a presigned URL's query.
pub fn parse_presigned(query: &str) -> Result<Presigned, SigError> {
    let need = |name: &str| {
        param(query, name).ok_or_else(|| SigError::Incomplete(format!("presigned URL lacks {name}")))
    };
    if need("X-Amz-Algorithm")? != ALGORITHM {
        return Err(SigError::Incomplete(format!("Unsupported signing algorithm; expected {ALGORITHM}")));
    }
    let credential = need("X-Amz-Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope.iter().any(|s| s.is_empty()) {
        return Err(SigError::Incomplete(format!("X-Amz-Credential {credential:?} is not a valid scope")));
    }
    let signature = need("X-Amz-Signature")?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigError::Incomplete("Signature must be 64 hex digits".into()));
    }
    let expires_secs = need("X-Amz-Expires")?
        .parse::<i64>()
        .ok()
        .filter(|s| (1..=MAX_EXPIRES_SECS).contains(s))
        .ok_or_else(|| SigError::Incomplete(format!("X-Amz-Expires must be 1 to {MAX_EXPIRES_SECS}")))?;
    Ok(Presigned {
        authorization: Authorization {
            access_key_id: scope[0].to_owned(),
            date: scope[1].to_owned(),
            region: scope[2].to_owned(),
            service: scope[3].to_owned(),
            signed_headers: need("X-Amz-SignedHeaders")?.split(';').map(str::to_owned).collect(),
            signature: signature.to_ascii_lowercase(),
        },
        security_token: param(query, "X-Amz-Security-Token"),
        amz_date: need("X-Amz-Date")?,
        expires_secs,
    })
}

/// Checks a presigned request's signature with `secret`: its scope's service, its lifetime
/// against `now`, then the signature (payload hashed as empty, or `UNSIGNED-PAYLOAD`).
pub fn verify_presigned(
    req: &SignedParts<'_>,
    auth: &Authorization,
    secret: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Result<(), SigError> {
    check_service(auth, service)?;
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(SigError::Incomplete("'host' must be a signed header".into()));
    }
    let p = parse_presigned(req.query)?;
    let when = NaiveDateTime::parse_from_str(&p.amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| SigError::Incomplete(format!("X-Amz-Date {:?} is not YYYYMMDDTHHMMSSZ", p.amz_date)))?
        .and_utc();
    let fmt = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    let skew = chrono::Duration::seconds(MAX_SKEW_SECS);
    if when > now + skew {
        return Err(SigError::NotYetCurrent { request: p.amz_date, limit: fmt(now + skew), now: fmt(now) });
    }
    let until = when + chrono::Duration::seconds(p.expires_secs);
    if until < now {
        return Err(SigError::Expired { request: fmt(until), limit: fmt(now), now: fmt(now) });
    }
    if !p.amz_date.starts_with(&auth.date) {
        return Err(SigError::BadScope("Date in Credential scope does not match X-Amz-Date".into()));
    }
    let query: String =
        req.query.split('&').filter(|kv| !kv.starts_with("X-Amz-Signature=")).collect::<Vec<_>>().join("&");
    let mut headers = String::new();
    for name in &auth.signed_headers {
        let value = header_value(req.headers, name).ok_or_else(|| {
            SigError::Incomplete(format!("signed header {name:?} is missing from the request"))
        })?;
        headers.push_str(&format!("{name}:{value}\n"));
    }
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let empty = hex::encode(Sha256::digest(req.body));
    for payload in [empty.as_str(), "UNSIGNED-PAYLOAD"] {
        let creq = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            req.method.to_ascii_uppercase(),
            canonical_uri(req.path),
            canonical_query(&query),
            headers,
            auth.signed_headers.join(";"),
            payload
        );
        let to_sign =
            format!("{ALGORITHM}\n{}\n{scope}\n{}", p.amz_date, hex::encode(Sha256::digest(creq.as_bytes())));
        let expected = hex::encode(hmac(&key, to_sign.as_bytes()));
        if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
            return Ok(());
        }
    }
    Err(SigError::Mismatch)
}
