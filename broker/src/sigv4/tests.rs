use super::*;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::time::SystemTime;

const AKID: &str = "AKIAAIRLOCKTEST00001";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Signs like the AWS SDKs do (aws-sigv4 is what the Rust SDK uses).
fn signed(body: &[u8], at: SystemTime, service: &str, region: &str) -> HeaderMap {
    let identity = Credentials::new(AKID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [
        ("host", "127.0.0.1:8443"),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "AmazonSSM.DescribeSessions"),
    ];
    let signable = SignableRequest::new(
        "POST",
        "https://127.0.0.1:8443/",
        headers.iter().map(|(k, v)| (*k, *v)),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method("POST").uri("https://127.0.0.1:8443/");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut req = req.body(()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.headers().clone()
}

fn check(
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Authorization, SigError> {
    let auth = parse(headers)?;
    let parts = SignedParts { method: "POST", path: "/", query: "", headers, body };
    verify(&parts, &auth, secret, "ssm", now).map(|_| auth)
}

#[test]
fn accepts_what_aws_sigv4_signs() {
    let body = br#"{"State":"Active"}"#;
    let now = SystemTime::now();
    let headers = signed(body, now, "ssm", "us-east-1");
    let auth = check(&headers, body, SECRET, now.into()).unwrap();
    assert_eq!(auth.access_key_id, AKID);
    assert_eq!(auth.region, "us-east-1");
    // Any region is fine: the broker serves whatever region the client was configured with.
    let headers = signed(body, now, "ssm", "eu-west-3");
    assert!(check(&headers, body, SECRET, now.into()).is_ok());
}

#[test]
fn rejects_tampering_and_wrong_secret() {
    let body = br#"{"State":"Active"}"#;
    let now = SystemTime::now();
    let headers = signed(body, now, "ssm", "us-east-1");
    assert_eq!(check(&headers, br#"{"State":"History"}"#, SECRET, now.into()), Err(SigError::Mismatch));
    assert_eq!(check(&headers, body, "not-the-secret", now.into()), Err(SigError::Mismatch));
    let mut other_target = headers.clone();
    other_target.insert("x-amz-target", "AmazonSSM.TerminateSession".parse().unwrap());
    assert_eq!(check(&other_target, body, SECRET, now.into()), Err(SigError::Mismatch));
}

#[test]
fn enforces_the_clock_skew_window() {
    let body = b"{}";
    let signed_at = SystemTime::now();
    let headers = signed(body, signed_at, "ssm", "us-east-1");
    let t: DateTime<Utc> = signed_at.into();
    assert!(check(&headers, body, SECRET, t + chrono::Duration::seconds(299)).is_ok());
    let err = check(&headers, body, SECRET, t + chrono::Duration::seconds(301)).unwrap_err();
    assert!(matches!(err, SigError::Expired { .. }), "{err}");
    assert_eq!(err.code(), "InvalidSignatureException");
    assert!(err.to_string().starts_with("Signature expired"));
    let err = check(&headers, body, SECRET, t - chrono::Duration::seconds(301)).unwrap_err();
    assert!(matches!(err, SigError::NotYetCurrent { .. }));
}

#[test]
fn wrong_service_is_refused() {
    let now = SystemTime::now();
    let headers = signed(b"{}", now, "ec2", "us-east-1");
    assert!(matches!(check(&headers, b"{}", SECRET, now.into()), Err(SigError::BadScope(_))));
}

#[test]
fn malformed_authorization_headers() {
    let mut h = HeaderMap::new();
    assert_eq!(parse(&h), Err(SigError::Missing));
    assert_eq!(SigError::Missing.code(), "MissingAuthenticationTokenException");
    for bad in [
        "Basic abc",
        "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host",
        "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ssm, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=zz",
    ] {
        h.insert(http::header::AUTHORIZATION, bad.parse().unwrap());
        let err = parse(&h).unwrap_err();
        assert_eq!(err.code(), "IncompleteSignatureException", "{bad}: {err}");
    }
}

#[test]
fn canonical_forms() {
    assert_eq!(canonical_uri("/"), "/");
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/a/./b/../c/"), "/a/c/");
    assert_eq!(canonical_uri("/a b"), "/a%20b");
    assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
    assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
    assert_eq!(canonical_query("x=a%20b&y"), "x=a%20b&y=");
}
