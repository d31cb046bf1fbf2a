//! SigV4 verification of API requests (header form, `AWS4-HMAC-SHA256`).
//!
//! Split in two so the caller can look the secret up asynchronously between the steps:
//! [`parse`] reads the Authorization header, [`verify`] recomputes the signature
//! ([`parse_presigned`] and [`verify_presigned`] for a presigned URL).

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// Allowed distance between the request's `X-Amz-Date` and our clock.
pub const MAX_SKEW_SECS: i64 = 300;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// RFC 3986 unreserved characters stay; everything else is %-encoded (SigV4's rule).
const SIGV4_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why a signature was refused; each maps to an SSM error code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigError {
    /// No Authorization header or signature.
    #[error("Request is missing Authentication Token")]
    Missing,
    /// The Authorization header lacks a part; the text says which.
    #[error("{0}")]
    Incomplete(String),
    /// The request's date is too far in the past.
    #[error("Signature expired: {request} is now earlier than {limit} ({now} - 5 min.)")]
    Expired {
        /// The request's date.
        request: String,
        /// The earliest date accepted.
        limit: String,
        /// The broker's time.
        now: String,
    },
    /// The request's date is too far in the future.
    #[error("Signature not yet current: {request} is still later than {limit} ({now} + 5 min.)")]
    NotYetCurrent {
        /// The request's date.
        request: String,
        /// The latest date accepted.
        limit: String,
        /// The broker's time.
        now: String,
    },
    /// The credential scope is wrong (date, region or service).
    #[error("{0}")]
    BadScope(String),
    /// The signature does not match.
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    Mismatch,
}

impl SigError {
    /// The SSM/AWS error code clients expect.
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Missing => "MissingAuthenticationTokenException",
            SigError::Incomplete(_) => "IncompleteSignatureException",
            _ => "InvalidSignatureException",
        }
    }
}

/// The parts of a request that the signature covers.
pub struct SignedParts<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path as sent on the wire (already percent-encoded).
    pub path: &'a str,
    /// The raw query string.
    pub query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request body.
    pub body: &'a [u8],
}

/// A parsed Authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id of the credential.
    pub access_key_id: String,
    /// The scope's date, `YYYYMMDD`.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// The names of the signed headers, lower case.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
}

/// Reads the Authorization header.
pub fn parse(headers: &HeaderMap) -> Result<Authorization, SigError> {
    let raw = headers.get(http::header::AUTHORIZATION).ok_or(SigError::Missing)?;
    let raw = raw.to_str().map_err(|_| SigError::Incomplete("Authorization header is not ASCII".into()))?;
    let rest = raw.strip_prefix(ALGORITHM).ok_or_else(|| {
        SigError::Incomplete(format!("Unsupported signing algorithm; expected {ALGORITHM}"))
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing =
        |what: &str| SigError::Incomplete(format!("Authorization header requires '{what}' parameter"));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope.iter().any(|s| s.is_empty()) {
        return Err(SigError::Incomplete(format!(
            "Credential should be scoped to a valid region: {credential} is not <key>/<date>/<region>/<service>/aws4_request"
        )));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigError::Incomplete("Signature must be 64 hex digits".into()));
    }
    Ok(Authorization {
        access_key_id: scope[0].to_owned(),
        date: scope[1].to_owned(),
        region: scope[2].to_owned(),
        service: scope[3].to_owned(),
        signed_headers: signed.split(';').map(str::to_owned).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// The credential's scope names `service` (what AWS answers, word for word, when not).
fn check_service(auth: &Authorization, service: &str) -> Result<(), SigError> {
    if auth.service != service {
        return Err(SigError::BadScope(format!(
            "Credential should be scoped to correct service: '{service}', not '{}'",
            auth.service
        )));
    }
    Ok(())
}

/// Checks the signature with `secret`, the request time against `now`, and the service.
pub fn verify(
    req: &SignedParts<'_>,
    auth: &Authorization,
    secret: &str,
    service: &str,
    now: DateTime<Utc>,
) -> Result<(), SigError> {
    check_service(auth, service)?;
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigError::Incomplete(format!("'{required}' must be a signed header")));
        }
    }
    // The operation and the body's format must be covered when sent, so a signature made for
    // one operation cannot be replayed as another (botocore and the AWS SDKs sign both).
    for covered in ["x-amz-target", "content-type"] {
        if req.headers.contains_key(covered) && !auth.signed_headers.iter().any(|h| h == covered) {
            return Err(SigError::Incomplete(format!("'{covered}' must be a signed header when it is sent")));
        }
    }
    let amz_date = header_value(req.headers, "x-amz-date")
        .ok_or_else(|| SigError::Incomplete("X-Amz-Date header is missing".into()))?;
    let when = NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| {
            SigError::Incomplete(format!("X-Amz-Date {amz_date:?} is not in the form YYYYMMDDTHHMMSSZ"))
        })?
        .and_utc();
    let fmt = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    let skew = chrono::Duration::seconds(MAX_SKEW_SECS);
    if when < now - skew {
        return Err(SigError::Expired { request: amz_date, limit: fmt(now - skew), now: fmt(now) });
    }
    if when > now + skew {
        return Err(SigError::NotYetCurrent { request: amz_date, limit: fmt(now + skew), now: fmt(now) });
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::BadScope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            &amz_date[..8.min(amz_date.len())]
        )));
    }
    let expected = signature(req, auth, secret, &amz_date)?;
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

/// The hex signature a correct signer produces for this request.
fn signature(
    req: &SignedParts<'_>,
    auth: &Authorization,
    secret: &str,
    amz_date: &str,
) -> Result<String, SigError> {
    let creq = canonical_request(req, &auth.signed_headers)?;
    let scope = format!("{}/{}/{}/aws4_request", auth.date, auth.region, auth.service);
    let to_sign =
        format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(creq.as_bytes())));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    Ok(hex::encode(hmac(&key, to_sign.as_bytes())))
}

fn canonical_request(req: &SignedParts<'_>, signed: &[String]) -> Result<String, SigError> {
    let mut headers = String::new();
    for name in signed {
        let value = header_value(req.headers, name).ok_or_else(|| {
            SigError::Incomplete(format!("signed header {name:?} is missing from the request"))
        })?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&value);
        headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        signed.join(";"),
        hex::encode(Sha256::digest(req.body))
    ))
}

/// All values of a header, trimmed, inner runs of spaces folded, joined with commas.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Non-S3 services normalize the path and encode each segment again (double encoding).
fn canonical_uri(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut uri: String =
        out.iter().map(|s| format!("/{}", utf8_percent_encode(s, SIGV4_SET))).collect::<Vec<_>>().concat();
    if uri.is_empty() || (path.ends_with('/') && !out.is_empty()) {
        uri.push('/');
    }
    uri
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let decoded = percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
                utf8_percent_encode(&decoded, SIGV4_SET).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

mod presign;
pub use presign::{parse_presigned, verify_presigned, Presigned};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
