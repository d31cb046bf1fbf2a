//! SigV4 signing of awsJson1_1 requests with the aws-sigv4 crate.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use url::Url;

use crate::credentials::Credentials;
use crate::error::Error;

/// Signing name of the SSM service.
pub const SERVICE: &str = "ssm";
/// The awsJson1_1 content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Prefix of every `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "AmazonSSM.";

/// The headers to send with a `POST` of `body` to `url` for SSM operation `op`, signed at `time`
/// (see [`signed_headers_for_target`]).
pub fn signed_headers(
    url: &Url,
    op: &str,
    body: &[u8],
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<Vec<(String, String)>, Error> {
    signed_headers_for_target(url, &format!("{TARGET_PREFIX}{op}"), body, region, credentials, time)
}

/// The headers to send with a `POST` of `body` to `url` with `X-Amz-Target: target`, signed
/// at `time`.
///
/// Every prefix (`AmazonSSM.`, `AirlockIAM.`, `AirlockSTS.`) is signed with service
/// [`SERVICE`]: the broker serves them all on one endpoint. Returns `content-type`, `x-amz-target`, and what the signer adds (`x-amz-date`,
/// `authorization`, and `x-amz-security-token` for temporary credentials). The `host`
/// header is signed from the URL exactly as the HTTP client will send it.
pub fn signed_headers_for_target(
    url: &Url,
    target: &str,
    body: &[u8],
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<Vec<(String, String)>, Error> {
    let mut headers = vec![
        ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
        ("x-amz-target".to_owned(), target.to_owned()),
    ];
    let identity: Identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "airlock",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Error::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| Error::Signing(e.to_string()))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| Error::Signing(e.to_string()))?.into_parts();
    let added: Vec<(String, String)> =
        instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    headers.extend(added);
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    // 2024-03-01T12:00:00Z
    fn when() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_709_294_400)
    }

    #[test]
    fn authorization_has_scope_and_signed_headers() {
        let url = Url::parse("http://127.0.0.1:8080/").unwrap();
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None);
        let h =
            signed_headers(&url, "DescribeSessions", b"{\"State\":\"Active\"}", "us-east-1", &creds, when())
                .unwrap();
        let auth = header(&h, "authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240301/us-east-1/ssm/aws4_request"),
            "{auth}"
        );
        let signed = auth.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
        let names: Vec<&str> = signed.split(';').collect();
        for needed in ["content-type", "host", "x-amz-date", "x-amz-target"] {
            assert!(names.contains(&needed), "{needed} missing from {signed}");
        }
        assert!(!names.contains(&"x-amz-security-token"));
        assert_eq!(header(&h, "x-amz-date"), Some("20240301T120000Z"));
        assert_eq!(header(&h, "x-amz-target"), Some("AmazonSSM.DescribeSessions"));
        assert_eq!(header(&h, "content-type"), Some(CONTENT_TYPE));
        assert!(header(&h, "x-amz-security-token").is_none());
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let url = Url::parse("https://broker.example:8443/").unwrap();
        let creds = Credentials::new("ASIATEMP", "secret", Some("the-token".into()));
        let h = signed_headers(&url, "StartSession", b"{}", "eu-west-1", &creds, when()).unwrap();
        assert_eq!(header(&h, "x-amz-security-token"), Some("the-token"));
        let auth = header(&h, "authorization").unwrap();
        assert!(auth.contains("Credential=ASIATEMP/20240301/eu-west-1/ssm/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }

    #[test]
    fn other_targets_are_signed_as_ssm() {
        let url = Url::parse("http://127.0.0.1:8080/").unwrap();
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None);
        let h = signed_headers_for_target(&url, "AirlockIAM.CreateUser", b"{}", "us-east-1", &creds, when())
            .unwrap();
        assert_eq!(header(&h, "x-amz-target"), Some("AirlockIAM.CreateUser"));
        let auth = header(&h, "authorization").unwrap();
        assert!(auth.contains("/us-east-1/ssm/aws4_request"), "{auth}");
        let ssm = signed_headers(&url, "CreateUser", b"{}", "us-east-1", &creds, when()).unwrap();
        assert_ne!(header(&ssm, "authorization"), Some(auth), "the target is part of the signature");
    }

    #[test]
    fn signature_depends_on_body_and_secret() {
        let url = Url::parse("http://localhost:1/").unwrap();
        let a = Credentials::new("AKID", "one", None);
        let b = Credentials::new("AKID", "two", None);
        let sig = |c: &Credentials, body: &[u8]| {
            let h = signed_headers(&url, "X", body, "us-east-1", c, when()).unwrap();
            header(&h, "authorization").unwrap().rsplit("Signature=").next().unwrap().to_owned()
        };
        assert_eq!(sig(&a, b"{}"), sig(&a, b"{}"));
        assert_ne!(sig(&a, b"{}"), sig(&a, b"{ }"));
        assert_ne!(sig(&a, b"{}"), sig(&b, b"{}"));
    }
}
