//! The console's sign-in, end to end: a real broker over HTTPS, credentials set up through the
//! signed API (the `airlock` CLI), and a browser played by reqwest with a cookie jar.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use airlock_broker::totp;
use common::Broker;

const PASSWORD: &str = "correct horse battery staple";
const GENERIC: &str = "The user name, password or MFA code is incorrect.";

/// A browser: a cookie jar, the broker's CA, and the CSRF token it was last given.
struct Browser {
    client: reqwest::Client,
    base: String,
    csrf: Option<String>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Browser {
    fn new(broker: &Broker) -> Browser {
        let ca = std::fs::read(broker.ca_file()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
            .with_no_client_auth();
        let client =
            reqwest::Client::builder().cookie_store(true).use_preconfigured_tls(tls).build().unwrap();
        Browser { client, base: broker.url.clone(), csrf: None }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Answer {
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    /// A POST as the console page makes it: same origin, with the CSRF token it holds.
    async fn post(&self, path: &str, body: &Value, extra: &[(&str, &str)]) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("origin", self.base.parse().unwrap());
        headers.insert("sec-fetch-site", "same-origin".parse().unwrap());
        if let Some(t) = &self.csrf {
            headers.insert("x-csrf-token", t.parse().unwrap());
        }
        // A test's own values replace the page's.
        for (k, v) in extra {
            headers
                .insert(reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        self.send(self.client.post(format!("{}/console/api/{path}", self.base)).headers(headers).json(body))
            .await
    }

    async fn signin(&mut self, user: &str, password: &str, mfa: Option<&str>) -> Answer {
        let mut form = json!({ "userName": user, "password": password });
        if let Some(code) = mfa {
            form["mfaCode"] = json!(code);
        }
        let a = self.post("signin", &form, &[]).await;
        if a.status == 200 {
            self.csrf = Some(a.body["csrfToken"].as_str().unwrap().to_owned());
        }
        a
    }

    async fn call(&self, operation: &str, body: Value) -> Answer {
        self.post("call", &json!({ "operation": operation, "body": body }), &[]).await
    }

    async fn whoami(&self) -> Answer {
        self.send(self.client.get(format!("{}/console/api/whoami", self.base))).await
    }
}

fn step_now() -> u64 {
    totp::step_of(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs())
}

/// Runs an `airlock` command expected to fail; returns its stderr.
fn fails(broker: &Broker, args: &[&str]) -> String {
    let out = broker.cli().args(args).output().unwrap();
    assert!(!out.status.success(), "airlock {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_generic_failure(a: &Answer, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.body);
    assert_eq!(a.body, json!({"__type": "SignInFailed", "message": GENERIC}), "{what}");
    assert!(a.headers.get("set-cookie").is_none(), "{what}: no cookie on a failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_mfa_csrf_calls_and_sign_out() {
    let broker = Broker::start();
    broker.api(&["iam", "create-user", "--user-name", "ops"]);

    // Login profiles through the signed API: the policy, then the profile.
    let short =
        fails(&broker, &["iam", "create-login-profile", "--user-name", "ops", "--password", "Sh0rt!pw"]);
    assert!(short.contains("PasswordPolicyViolation") && short.contains("at least 12 characters"), "{short}");
    let named = fails(
        &broker,
        &["iam", "create-login-profile", "--user-name", "ops", "--password", "my-name-is-ops-1"],
    );
    assert!(named.contains("PasswordPolicyViolation") && named.contains("user name"), "{named}");
    let nobody =
        fails(&broker, &["iam", "create-login-profile", "--user-name", "ghost", "--password", PASSWORD]);
    assert!(nobody.contains("NoSuchEntity"), "{nobody}");
    let created = broker.api(&["iam", "create-login-profile", "--user-name", "ops", "--password", PASSWORD]);
    assert_eq!(created["LoginProfile"]["UserName"], "ops");
    assert_eq!(created["LoginProfile"]["PasswordResetRequired"], false);
    assert!(!created.to_string().contains(PASSWORD));
    let again =
        fails(&broker, &["iam", "create-login-profile", "--user-name", "ops", "--password", PASSWORD]);
    assert!(again.contains("EntityAlreadyExists"), "{again}");
    let got = broker.api(&["iam", "get-login-profile", "--user-name", "ops"]);
    assert_eq!(got["LoginProfile"]["UserName"], "ops");

    // ops may list instances only with MFA, given within the hour.
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "ssm:DescribeInstanceInformation", "Resource": "*",
        "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"},
                      "NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}},
        {"Effect": "Allow", "Action": "iam:ListMFADevices", "Resource": "arn:airlock:iam::*:user/ops"}]});
    broker.api(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "ops",
        "--policy-name",
        "mfa",
        "--policy-document",
        &policy.to_string(),
    ]);

    let mut browser = Browser::new(&broker);
    assert_eq!(browser.whoami().await.status, 401, "not signed in yet");

    // Sign-in is refused without a same-origin marker (login CSRF), and generically on any
    // wrong credential.
    let bare = browser
        .send(browser.client.post(format!("{}/console/api/signin", broker.url)).json(&json!({
            "userName": "ops", "password": PASSWORD })))
        .await;
    assert_eq!(bare.status, 403, "{}", bare.body);
    assert_generic_failure(&browser.signin("ops", "wrong password entirely", None).await, "wrong password");
    assert_generic_failure(&browser.signin("nosuchuser", PASSWORD, None).await, "unknown user");

    let ok = browser.signin("ops", PASSWORD, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = ok.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for attr in ["airlock_console=", "HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert_eq!(ok.body["userName"], "ops");
    assert_eq!(ok.body["mfaAuthenticated"], false);
    assert!(!ok.body.to_string().contains(PASSWORD));
    let me = browser.whoami().await;
    assert_eq!((me.status, &me.body["userName"]), (200, &json!("ops")), "{}", me.body);
    assert_eq!(me.body["csrfToken"], ok.body["csrfToken"]);

    // Calls go through the API's gate: without MFA the condition fails, and the refusal
    // names the action and resource; an action no policy allows likewise.
    let denied = browser.call("DescribeInstanceInformation", json!({})).await;
    assert_eq!(
        (denied.status, denied.body["__type"].as_str()),
        (400, Some("AccessDeniedException")),
        "{}",
        denied.body
    );
    let message = denied.body["message"].as_str().unwrap();
    assert!(
        message.contains(
            ":user/ops is not authorized to perform: ssm:DescribeInstanceInformation on resource: *"
        ),
        "{message}"
    );
    let iam = browser.call("AirlockIAM.ListUsers", json!({})).await;
    assert_eq!(iam.body["__type"], "AccessDenied", "{}", iam.body);
    assert!(iam.body["message"].as_str().unwrap().contains("perform: iam:ListUsers on resource: *"));

    // State-changing requests need the CSRF token and the console's own origin.
    let body = json!({ "operation": "DescribeInstanceInformation", "body": {} });
    let no_csrf = Browser { csrf: None, client: browser.client.clone(), base: browser.base.clone() };
    assert_eq!(no_csrf.post("call", &body, &[]).await.status, 403, "no CSRF token");
    assert_eq!(browser.post("call", &body, &[("x-csrf-token", "forged")]).await.status, 403);
    let foreign = browser.post("call", &body, &[("origin", "https://evil.example")]).await;
    assert_eq!(foreign.status, 403, "foreign Origin: {}", foreign.body);
    let cross = browser.post("call", &body, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(cross.status, 403, "cross-site fetch: {}", cross.body);
    assert_eq!(no_csrf.post("signout", &json!({}), &[]).await.status, 403, "sign-out needs it too");

    // A virtual MFA device, enabled with two consecutive codes computed from its seed.
    let device = broker.api(&["iam", "create-virtual-mfa-device", "--virtual-mfa-device-name", "ops-phone"]);
    let serial = device["VirtualMFADevice"]["SerialNumber"].as_str().unwrap().to_owned();
    let seed = device["VirtualMFADevice"]["Base32StringSeed"].as_str().unwrap().to_owned();
    assert!(serial.ends_with(":mfa/ops-phone"), "{serial}");
    let uri = device["VirtualMFADevice"]["OtpAuthUri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={seed}")), "{uri}");
    let secret = totp::base32_decode(&seed).unwrap();
    let wrong = fails(
        &broker,
        &[
            "iam",
            "enable-mfa-device",
            "--user-name",
            "ops",
            "--serial-number",
            &serial,
            "--authentication-code1",
            "000000",
            "--authentication-code2",
            "000000",
        ],
    );
    assert!(wrong.contains("InvalidAuthenticationCode"), "{wrong}");
    let s = step_now() - 1;
    let (c1, c2) = (totp::code_text(&secret, s), totp::code_text(&secret, s + 1));
    broker.api(&[
        "iam",
        "enable-mfa-device",
        "--user-name",
        "ops",
        "--serial-number",
        &serial,
        "--authentication-code1",
        &c1,
        "--authentication-code2",
        &c2,
    ]);
    let listed = broker.api(&["iam", "list-mfa-devices", "--user-name", "ops"]);
    assert_eq!(listed["MFADevices"][0]["SerialNumber"], serial.as_str());
    let conflict = fails(&broker, &["iam", "delete-virtual-mfa-device", "--serial-number", &serial]);
    assert!(conflict.contains("DeleteConflict"), "{conflict}");

    // Sign out; the cookie no longer works.
    let out = browser.post("signout", &json!({}), &[]).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.headers.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(browser.whoami().await.status, 401);
    assert_eq!(browser.call("DescribeInstanceInformation", json!({})).await.status, 401);

    // With a device, the password alone is refused, generically; a code signs in.
    assert_generic_failure(&browser.signin("ops", PASSWORD, None).await, "MFA code missing");
    let code = totp::code_text(&secret, step_now() + 1);
    let mfa = browser.signin("ops", PASSWORD, Some(&code)).await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert_eq!(mfa.body["mfaAuthenticated"], true);
    let me = browser.whoami().await;
    assert!(me.body["mfaAge"].as_i64().unwrap() < 60, "{}", me.body);
    let allowed = browser.call("DescribeInstanceInformation", json!({})).await;
    assert_eq!(allowed.status, 200, "MFA present: {}", allowed.body);
    assert!(allowed.body["InstanceInformationList"].is_array(), "{}", allowed.body);
    // An IAM operation on the caller's own user: without UserName, the signed-in user's.
    let own = browser.call("ListMFADevices", json!({})).await;
    assert_eq!(own.body["MFADevices"][0]["SerialNumber"], serial.as_str(), "{}", own.body);
    // The same code again is a replay.
    let mut other = Browser::new(&broker);
    assert_generic_failure(&other.signin("ops", PASSWORD, Some(&code)).await, "replayed code");

    // Every attempt is in the audit log, with why it failed, and never the password.
    let audit = broker.api(&["iam", "list-audit-events", "--max-results", "200"]);
    assert!(!audit.to_string().contains(PASSWORD));
    let signins: Vec<(String, String)> = audit["Events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["Action"] == "signin:ConsoleLogin")
        .map(|e| {
            (
                e["Principal"].as_str().unwrap().rsplit('/').next().unwrap().to_owned(),
                e["Decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("ops", "failedPassword"),
        ("nosuchuser", "failedNoSuchUser"),
        ("ops", "allowed"),
        ("ops", "failedMfaMissing"),
    ] {
        assert!(
            signins.iter().any(|(u, d)| (u.as_str(), d.as_str()) == expected),
            "{expected:?} in {signins:?}"
        );
    }
    assert!(
        signins.iter().any(|(u, d)| u == "ops" && d.starts_with("failedMfa") && d != "failedMfaMissing"),
        "{signins:?}"
    );
    assert!(audit["Events"].as_array().unwrap().iter().any(|e| e["Action"] == "signin:ConsoleLogout"));
    assert!(audit["Events"].as_array().unwrap().iter().any(|e| e["Action"] == "iam:CreateLoginProfile"));

    // Deleting the password signs the user out at once.
    let still_has_things = fails(&broker, &["iam", "delete-user", "--user-name", "ops"]);
    assert!(still_has_things.contains("DeleteConflict"), "{still_has_things}");
    broker.api(&["iam", "delete-login-profile", "--user-name", "ops"]);
    assert_eq!(browser.whoami().await.status, 401, "signed out with the password gone");
    broker.api(&["iam", "deactivate-mfa-device", "--user-name", "ops", "--serial-number", &serial]);
    broker.api(&["iam", "delete-virtual-mfa-device", "--serial-number", &serial]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sixth_failure_is_locked_out_even_with_the_right_password() {
    let broker = Broker::start();
    broker.api(&["iam", "create-user", "--user-name", "target"]);
    broker.api(&["iam", "create-login-profile", "--user-name", "target", "--password", PASSWORD]);
    let mut browser = Browser::new(&broker);
    for n in 1..=5 {
        assert_generic_failure(
            &browser.signin("target", &format!("guess number {n} wrong"), None).await,
            "guess",
        );
    }
    let locked = browser.signin("target", PASSWORD, None).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(locked.body["__type"], "Throttling");
    let wait: u64 = locked.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // Another user from the same address is not locked (the address allows more).
    broker.api(&["iam", "create-user", "--user-name", "bystander"]);
    broker.api(&["iam", "create-login-profile", "--user-name", "bystander", "--password", PASSWORD]);
    assert_eq!(browser.signin("bystander", PASSWORD, None).await.status, 200);
    let audit = broker.api(&["iam", "list-audit-events"]);
    assert!(audit["Events"].as_array().unwrap().iter().any(|e| e["Decision"] == "throttled"), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_dev_cookie_and_a_required_password_change() {
    let broker = Broker::start_with(&["--insecure-http"]);
    assert!(broker.url.starts_with("http://127.0.0.1:"), "{}", broker.url);
    broker.api(&["iam", "create-user", "--user-name", "newbie"]);
    broker.api(&[
        "iam",
        "create-login-profile",
        "--user-name",
        "newbie",
        "--password",
        PASSWORD,
        "--password-reset-required",
    ]);
    let account =
        broker.api(&["iam", "get-user", "--user-name", "newbie"])["User"]["Arn"].as_str().unwrap().to_owned();
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:ChangePassword",
        "Resource": account}]});
    broker.api(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "newbie",
        "--policy-name",
        "pw",
        "--policy-document",
        &policy.to_string(),
    ]);
    let mut browser = Browser::new(&broker);
    let ok = browser.signin("newbie", PASSWORD, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = ok.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && !cookie.contains("Secure"), "plain-HTTP loopback dev: {cookie}");
    assert_eq!(ok.body["passwordResetRequired"], true);
    let first = browser.call("ListUsers", json!({})).await;
    assert_eq!(
        (first.status, &first.body["__type"]),
        (403, &json!("PasswordResetRequired")),
        "{}",
        first.body
    );
    let weak = browser
        .call("ChangePassword", json!({"OldPassword": PASSWORD, "NewPassword": "newbie-newbie-1"}))
        .await;
    assert_eq!(weak.body["__type"], "PasswordPolicyViolation", "{}", weak.body);
    let changed = browser
        .call("ChangePassword", json!({"OldPassword": PASSWORD, "NewPassword": "a brand new passphrase"}))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let after = browser.call("ListUsers", json!({})).await;
    assert_eq!(after.body["__type"], "AccessDenied", "the reset is done; the gate decides: {}", after.body);
    let profile = broker.api(&["iam", "get-login-profile", "--user-name", "newbie"]);
    assert_eq!(profile["LoginProfile"]["PasswordResetRequired"], false);
    let mut fresh = Browser::new(&broker);
    assert_generic_failure(&fresh.signin("newbie", PASSWORD, None).await, "old password");
    assert_eq!(fresh.signin("newbie", "a brand new passphrase", None).await.status, 200);
}
