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

/// 2026-01-01T00:00:00Z: a whole second, so `X-Amz-Date` carries the exact signing time.
fn fixed_time() -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600)
}

/// A request carrying `headers` (plus `x-amz-date`), signed over `signed` only: what a
/// careless or malicious signer could send. Uses this module's own signer.
fn hand_signed(headers: &[(&str, &str)], signed: &[&str], body: &[u8], at: DateTime<Utc>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let amz_date = at.format("%Y%m%dT%H%M%SZ").to_string();
    map.insert("x-amz-date", amz_date.parse().unwrap());
    let auth = Authorization {
        access_key_id: AKID.into(),
        date: at.format("%Y%m%d").to_string(),
        region: "us-east-1".into(),
        service: "ssm".into(),
        signed_headers: signed.iter().map(|s| s.to_string()).collect(),
        signature: String::new(),
    };
    let parts = SignedParts { method: "POST", path: "/", query: "", headers: &map, body };
    let sig = signature(&parts, &auth, SECRET, &amz_date).unwrap();
    let value = format!(
        "{ALGORITHM} Credential={AKID}/{}/us-east-1/ssm/aws4_request, SignedHeaders={}, Signature={sig}",
        auth.date,
        signed.join(";")
    );
    map.insert(http::header::AUTHORIZATION, value.parse().unwrap());
    map
}

const HOST: (&str, &str) = ("host", "127.0.0.1:8443");
const TARGET: (&str, &str) = ("x-amz-target", "AmazonSSM.DescribeSessions");
const JSON: (&str, &str) = ("content-type", "application/x-amz-json-1.1");

#[test]
fn constant_time_eq_compares_every_byte() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    // Two differences that cancel under XOR-accumulation must still differ.
    assert!(!constant_time_eq(b"ab", b"ba"));
    assert!(!constant_time_eq(b"0f", b"f0"));
}

#[test]
fn a_signature_with_two_digits_swapped_is_refused() {
    let body = b"{}";
    let at = fixed_time();
    let headers = signed(body, at, "ssm", "us-east-1");
    let good = parse(&headers).unwrap().signature;
    let bytes = good.as_bytes();
    // Swap the first two different hex digits.
    let j = (1..bytes.len()).find(|&j| bytes[j] != bytes[0]).unwrap();
    let mut swapped = bytes.to_vec();
    swapped.swap(0, j);
    let swapped = String::from_utf8(swapped).unwrap();
    let raw = headers.get(http::header::AUTHORIZATION).unwrap().to_str().unwrap().replace(&good, &swapped);
    let mut forged = headers.clone();
    forged.insert(http::header::AUTHORIZATION, raw.parse().unwrap());
    assert_eq!(check(&forged, body, SECRET, at.into()), Err(SigError::Mismatch));
    assert!(check(&headers, body, SECRET, at.into()).is_ok());
}

#[test]
fn hand_signed_requests_verify_when_everything_sent_is_signed() {
    let at: DateTime<Utc> = fixed_time().into();
    let h = hand_signed(
        &[HOST, TARGET, JSON],
        &["content-type", "host", "x-amz-date", "x-amz-target"],
        b"{}",
        at,
    );
    assert!(check(&h, b"{}", SECRET, at).is_ok());
    // Neither header is required when it is not sent.
    let h = hand_signed(&[HOST], &["host", "x-amz-date"], b"{}", at);
    assert!(check(&h, b"{}", SECRET, at).is_ok());
}

#[test]
fn host_and_date_must_be_signed() {
    let at: DateTime<Utc> = fixed_time().into();
    let h = hand_signed(&[HOST, TARGET, JSON], &["content-type", "x-amz-date", "x-amz-target"], b"{}", at);
    let err = check(&h, b"{}", SECRET, at).unwrap_err();
    assert_eq!(err, SigError::Incomplete("'host' must be a signed header".into()));
    assert_eq!(err.code(), "IncompleteSignatureException");
    let h = hand_signed(&[HOST, TARGET, JSON], &["content-type", "host", "x-amz-target"], b"{}", at);
    let err = check(&h, b"{}", SECRET, at).unwrap_err();
    assert_eq!(err, SigError::Incomplete("'x-amz-date' must be a signed header".into()));
}

/// Regression (issue 9): a signature that does not cover `x-amz-target` was valid for any
/// operation, so a captured DescribeSessions request could be replayed as TerminateSession.
#[test]
fn an_unsigned_target_cannot_be_swapped() {
    let at: DateTime<Utc> = fixed_time().into();
    let mut h = hand_signed(&[HOST, TARGET, JSON], &["content-type", "host", "x-amz-date"], b"{}", at);
    h.insert("x-amz-target", "AmazonSSM.TerminateSession".parse().unwrap());
    let err = check(&h, b"{}", SECRET, at).unwrap_err();
    assert_eq!(err, SigError::Incomplete("'x-amz-target' must be a signed header when it is sent".into()));
    assert_eq!(err.code(), "IncompleteSignatureException");
    let h = hand_signed(&[HOST, TARGET, JSON], &["host", "x-amz-date", "x-amz-target"], b"{}", at);
    let err = check(&h, b"{}", SECRET, at).unwrap_err();
    assert_eq!(err, SigError::Incomplete("'content-type' must be a signed header when it is sent".into()));
}

#[test]
fn the_skew_window_is_300_seconds_inclusive_both_ways() {
    let body = b"{}";
    let at = fixed_time();
    let headers = signed(body, at, "ssm", "us-east-1");
    let t: DateTime<Utc> = at.into();
    let secs = chrono::Duration::seconds;
    assert!(check(&headers, body, SECRET, t + secs(300)).is_ok());
    assert!(check(&headers, body, SECRET, t - secs(300)).is_ok());
    let late = check(&headers, body, SECRET, t + secs(301)).unwrap_err();
    assert_eq!(
        late.to_string(),
        "Signature expired: 20260101T000000Z is now earlier than 20260101T000001Z (20260101T000501Z - 5 min.)"
    );
    assert_eq!(late.code(), "InvalidSignatureException");
    let early = check(&headers, body, SECRET, t - secs(301)).unwrap_err();
    assert_eq!(
        early.to_string(),
        "Signature not yet current: 20260101T000000Z is still later than 20251231T235959Z (20251231T235459Z + 5 min.)"
    );
    assert_eq!(early.code(), "InvalidSignatureException");
}

#[test]
fn refusal_messages_are_exact() {
    let at = fixed_time();
    let headers = signed(b"{}", at, "ssm", "us-east-1");
    assert_eq!(
        check(&headers, b"[]", SECRET, at.into()).unwrap_err().to_string(),
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
    );
    assert_eq!(SigError::Mismatch.code(), "InvalidSignatureException");
    assert_eq!(parse(&HeaderMap::new()).unwrap_err().to_string(), "Request is missing Authentication Token");
    let headers = signed(b"{}", at, "ec2", "us-east-1");
    let err = check(&headers, b"{}", SECRET, at.into()).unwrap_err();
    assert_eq!(err.to_string(), "Credential should be scoped to correct service: 'ssm', not 'ec2'");
    assert_eq!(err.code(), "InvalidSignatureException");
}

fn auth_header(credential: &str, signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value =
        format!("{ALGORITHM} Credential={credential}, SignedHeaders=host;x-amz-date, Signature={signature}");
    h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
    h
}

#[test]
fn credential_scopes_need_five_nonempty_parts() {
    let sig = "0123456789abcdef".repeat(4);
    assert!(parse(&auth_header("AK/20260101/us-east-1/ssm/aws4_request", &sig)).is_ok());
    for bad in [
        "AK//us-east-1/ssm/aws4_request",
        "/20260101/us-east-1/ssm/aws4_request",
        "AK/20260101//ssm/aws4_request",
        "AK/20260101/us-east-1//aws4_request",
        "AK/20260101/us-east-1/ssm/aws4_reques",
        "AK/20260101/us-east-1/ssm",
        "AK/20260101/us-east-1/ssm/aws4_request/x",
    ] {
        let err = parse(&auth_header(bad, &sig)).unwrap_err();
        assert_eq!(
            err,
            SigError::Incomplete(format!(
                "Credential should be scoped to a valid region: {bad} is not <key>/<date>/<region>/<service>/aws4_request"
            )),
            "{bad}"
        );
    }
}

#[test]
fn signatures_are_exactly_64_hex_digits() {
    let scope = "AK/20260101/us-east-1/ssm/aws4_request";
    let upper = "0123456789ABCDEF".repeat(4);
    assert_eq!(parse(&auth_header(scope, &upper)).unwrap().signature, upper.to_ascii_lowercase());
    for bad in ["z".repeat(64), "0".repeat(63), "0".repeat(65), "00".into(), format!("{}g", "0".repeat(63))] {
        let err = parse(&auth_header(scope, &bad)).unwrap_err();
        assert_eq!(err, SigError::Incomplete("Signature must be 64 hex digits".into()), "{bad}");
    }
}

#[test]
fn the_request_date_must_be_well_formed_and_in_the_scope() {
    let at: DateTime<Utc> = fixed_time().into();
    let mut h = hand_signed(&[HOST], &["host", "x-amz-date"], b"{}", at);
    let raw =
        h.get(http::header::AUTHORIZATION).unwrap().to_str().unwrap().replace("/20260101/", "/20251231/");
    h.insert(http::header::AUTHORIZATION, raw.parse().unwrap());
    assert_eq!(
        check(&h, b"{}", SECRET, at),
        Err(SigError::BadScope(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '20251231' != '20260101'"
                .into()
        ))
    );
    let mut h = hand_signed(&[HOST], &["host", "x-amz-date"], b"{}", at);
    h.insert("x-amz-date", "2026-01-01T00:00:00Z".parse().unwrap());
    assert_eq!(
        check(&h, b"{}", SECRET, at),
        Err(SigError::Incomplete(
            "X-Amz-Date \"2026-01-01T00:00:00Z\" is not in the form YYYYMMDDTHHMMSSZ".into()
        ))
    );
    h.remove("x-amz-date");
    assert_eq!(
        check(&h, b"{}", SECRET, at),
        Err(SigError::Incomplete("X-Amz-Date header is missing".into()))
    );
    let mut h = hand_signed(&[HOST], &["host", "x-amz-date"], b"{}", at);
    let raw = h
        .get(http::header::AUTHORIZATION)
        .unwrap()
        .to_str()
        .unwrap()
        .replace("SignedHeaders=host;x-amz-date", "SignedHeaders=host;x-amz-date;x-amz-meta");
    h.insert(http::header::AUTHORIZATION, raw.parse().unwrap());
    assert_eq!(
        check(&h, b"{}", SECRET, at),
        Err(SigError::Incomplete("signed header \"x-amz-meta\" is missing from the request".into()))
    );
}
