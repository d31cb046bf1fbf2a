//! Property tests of the Authorization header parser and the verifier: arbitrary and
//! near-valid input is refused with an error, never a panic. `PROPTEST_CASES` raises the
//! case count (default 256) for longer runs.

use super::*;
use proptest::prelude::*;

/// One Authorization header from fragments close to valid ones.
fn near_valid_header() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just(String::new()),
        Just("AKIAAIRLOCKTEST00001".to_owned()),
        Just("20260101".to_owned()),
        Just("us-east-1".to_owned()),
        Just("ssm".to_owned()),
        Just("aws4_request".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ];
    let credential = prop::collection::vec(part, 0..8).prop_map(|p| p.join("/"));
    let signed = prop::collection::vec(
        prop_oneof![Just("host"), Just("x-amz-date"), Just("x-amz-target"), Just(""), Just("content-type")],
        0..6,
    )
    .prop_map(|h| h.join(";"));
    let signature = prop_oneof!["[0-9a-fA-F]{64}", "[0-9a-f]{0,70}", "[ -~]{0,70}", "\\PC{0,64}"];
    let algorithm =
        prop_oneof![Just(ALGORITHM), Just("AWS4-HMAC-SHA256X"), Just(""), Just("aws4-hmac-sha256")];
    let separator = prop_oneof![Just(", "), Just(","), Just(" "), Just(",,")];
    (algorithm, credential, signed, signature, separator, any::<bool>()).prop_map(
        |(alg, cred, signed, sig, sep, reorder)| {
            let (a, b, c) =
                (format!("Credential={cred}"), format!("SignedHeaders={signed}"), format!("Signature={sig}"));
            if reorder {
                format!("{alg} {c}{sep}{a}{sep}{b}")
            } else {
                format!("{alg} {a}{sep}{b}{sep}{c}")
            }
        },
    )
}

fn with_header(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let value = http::HeaderValue::from_bytes(value).ok()?;
    let mut h = HeaderMap::new();
    h.insert(name, value);
    Some(h)
}

/// What a successful parse promises the verifier.
fn check_parsed(auth: &Authorization) {
    assert_eq!(auth.signature.len(), 64);
    assert!(auth.signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    for part in [&auth.access_key_id, &auth.date, &auth.region, &auth.service] {
        assert!(!part.is_empty() && !part.contains('/'));
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Some(h) = with_header("authorization", &bytes) {
            if let Ok(auth) = parse(&h) {
                check_parsed(&auth);
            }
        }
    }

    #[test]
    fn near_valid_headers_parse_or_are_refused(value in near_valid_header()) {
        if let Some(h) = with_header("authorization", value.as_bytes()) {
            match parse(&h) {
                Ok(auth) => check_parsed(&auth),
                Err(e) => prop_assert!(
                    matches!(e, SigError::Incomplete(_)),
                    "a present header is refused as incomplete, got {e:?}"
                ),
            }
        }
    }

    #[test]
    fn verify_refuses_without_panicking(
        value in near_valid_header(),
        date in prop_oneof!["[0-9]{8}T[0-9]{6}Z", "[ -~]{0,20}", "\\PC{0,16}"],
        target in "[ -~]{0,40}",
        path in "[ -~]{0,40}",
        query in "[ -~]{0,40}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let Some(mut h) = with_header("authorization", value.as_bytes()) else { return Ok(()) };
        for (name, v) in [("x-amz-date", date.as_str()), ("x-amz-target", target.as_str()), ("host", "h")] {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        }
        let Ok(auth) = parse(&h) else { return Ok(()) };
        let parts = SignedParts { method: "POST", path: &path, query: &query, headers: &h, body: &body };
        // A random signature essentially never matches; what matters is an error, not a panic.
        prop_assert!(verify(&parts, &auth, "secret", "ssm", Utc::now()).is_err());
    }

    #[test]
    fn canonical_forms_accept_any_text(path in "\\PC{0,64}", query in "\\PC{0,64}") {
        let uri = canonical_uri(&path);
        prop_assert!(uri.starts_with('/'));
        // Everything but the unreserved characters is %-encoded.
        let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~%".contains(c);
        prop_assert!(uri.chars().all(|c| unreserved(c) || c == '/'), "{uri}");
        let q = canonical_query(&query);
        prop_assert!(q.chars().all(|c| unreserved(c) || c == '=' || c == '&'), "{q}");
    }
}
