//! Tests of `identity::resolve` against a real store and master key, and the [`TestApp`]
//! other unit tests (authz) build on.

use std::collections::BTreeMap;

use airlock_recordings::sink::shipper::Shipper;
use airlock_recordings::Spool;

use super::*;
use crate::app::Settings;
use crate::ca::CertificateAuthority;
use crate::registry::Registry;
use crate::secrets::MasterKey;
use crate::sigv4::SigError;
use crate::store::{KeyRecord, SqliteStore};

/// The account of every [`TestApp`].
pub(crate) const ACCOUNT: &str = "123456789012";

/// An [`App`] over a store, CA and master key in a temporary folder.
pub(crate) struct TestApp {
    pub app: App,
    _dir: tempfile::TempDir,
}

/// Builds a [`TestApp`] with no principals.
pub(crate) async fn app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
    let (spool, new) = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    let recordings_dir = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings_dir).unwrap();
    let shipper = Shipper::start(spool, new, recordings_dir.clone(), None).await.unwrap();
    let app = App {
        store: std::sync::Arc::new(store),
        registry: Registry::default(),
        ca: CertificateAuthority::load_or_create(dir.path()).unwrap(),
        master: MasterKey::load_or_create(dir.path()).unwrap(),
        policy_cache: Default::default(),
        settings: Settings {
            account: ACCOUNT.into(),
            public_url: "https://127.0.0.1:1".into(),
            region: "us-east-1".into(),
            recordings_dir,
        },
        shipper,
        console: crate::console::Console::new(Default::default()),
        commands: Default::default(),
    };
    TestApp { app, _dir: dir }
}

/// Creates user `name` with `policy` inline (if any) and returns its record.
pub(crate) async fn user(app: &App, name: &str, policy: Option<&str>) -> PrincipalRecord {
    let p = PrincipalRecord {
        name: name.into(),
        arn: format!("arn:airlock:iam::{ACCOUNT}:user/{name}"),
        kind: PrincipalKind::User,
        principal_id: crate::keys::principal_id(PrincipalKind::User),
        tags: BTreeMap::new(),
        created_us: now_us(),
    };
    assert!(app.store.create_principal(&p).await.unwrap());
    if let Some(doc) = policy {
        app.store.put_inline_policy(name, "inline", doc).await.unwrap();
    }
    p
}

/// Stores a key for `principal` with `secret`; `token` makes it temporary.
async fn key(app: &App, id: &str, principal: &str, secret: &str, active: bool, token: Option<(&str, i64)>) {
    app.store
        .insert_key(&KeyRecord {
            access_key_id: id.into(),
            principal: principal.into(),
            secret_sealed: app.master.seal(secret).unwrap(),
            active,
            created_us: now_us(),
            expires_us: token.map(|(_, exp)| exp),
            token_hash: token.map(|(t, _)| hex::encode(Sha256::digest(t.as_bytes()))),
            session_name: token.map(|_| "s".to_owned()),
        })
        .await
        .unwrap();
}

/// A signer that holds `secret`: its signature verifies only with that secret.
fn signed_with(secret: &str) -> impl FnOnce(&str) -> Result<(), ApiError> + '_ {
    move |actual| if actual == secret { Ok(()) } else { Err(SigError::Mismatch.into()) }
}

fn answer(r: Result<Caller, ApiError>) -> (u16, &'static str, String) {
    let e = r.unwrap_err();
    (e.status.as_u16(), e.code, e.message)
}

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// Regression (issue 9): an inactive or expired key was refused before its signature was
/// checked, so anyone could tell which key ids exist and which are inactive.
#[tokio::test]
async fn without_the_secret_every_key_looks_the_same() {
    let t = app().await;
    let app = &t.app;
    user(app, "carol", None).await;
    key(app, "AKIAACTIVE0000000001", "carol", SECRET, true, None).await;
    key(app, "AKIAINACTIVE00000001", "carol", SECRET, false, None).await;
    key(app, "ASIAEXPIRED000000001", "carol", SECRET, true, Some(("tok", now_us() - 1))).await;
    let bad_signature = answer(resolve(app, "AKIAACTIVE0000000001", None, signed_with("guess")).await);
    assert_eq!(bad_signature.1, "InvalidSignatureException");
    for (id, token) in [
        ("AKIAUNKNOWN000000001", None),
        ("AKIAINACTIVE00000001", None),
        ("ASIAEXPIRED000000001", Some("tok")),
        ("ASIAEXPIRED000000001", Some("wrong token")),
        ("ASIAEXPIRED000000001", None),
        ("AKIAACTIVE0000000001", Some("a token for a long-term key")),
    ] {
        let got = answer(resolve(app, id, token, signed_with("guess")).await);
        assert_eq!(got, bad_signature, "{id} {token:?}");
    }
    // An unknown key is checked against a decoy, not against some other key's secret.
    let got = answer(resolve(app, "AKIAUNKNOWN000000001", None, signed_with(SECRET)).await);
    assert_eq!(got, bad_signature);
    let got = answer(resolve(app, "AKIAUNKNOWN000000001", None, signed_with("")).await);
    assert_eq!(got, bad_signature);
}

#[tokio::test]
async fn with_the_secret_the_key_state_is_told() {
    let t = app().await;
    let app = &t.app;
    user(app, "carol", None).await;
    key(app, "AKIAACTIVE0000000001", "carol", SECRET, true, None).await;
    key(app, "AKIAINACTIVE00000001", "carol", SECRET, false, None).await;
    key(app, "ASIAEXPIRED000000001", "carol", SECRET, true, Some(("tok", now_us() - 1))).await;
    key(app, "ASIAFRESH00000000001", "carol", SECRET, true, Some(("tok", now_us() + 60_000_000))).await;

    let caller = resolve(app, "AKIAACTIVE0000000001", None, signed_with(SECRET)).await.unwrap();
    assert_eq!((caller.principal.name.as_str(), caller.role_session), ("carol", None));
    let caller = resolve(app, "ASIAFRESH00000000001", Some("tok"), signed_with(SECRET)).await.unwrap();
    assert_eq!(caller.role_session.as_deref(), Some("s"));

    let invalid =
        (400, "UnrecognizedClientException", "The security token included in the request is invalid.".into());
    let inactive = (400, "UnrecognizedClientException", "The access key is inactive.".into());
    let expired =
        (400, "ExpiredTokenException", "The security token included in the request is expired".to_owned());
    for (id, token, want) in [
        ("AKIAINACTIVE00000001", None, inactive),
        ("ASIAEXPIRED000000001", Some("tok"), expired),
        ("ASIAEXPIRED000000001", None, invalid.clone()),
        ("ASIAFRESH00000000001", Some("forged"), invalid.clone()),
        ("AKIAACTIVE0000000001", Some("tok"), invalid),
    ] {
        assert_eq!(answer(resolve(app, id, token, signed_with(SECRET)).await), want, "{id} {token:?}");
    }
}

#[test]
fn callers_name_themselves_as_iam_does() {
    let principal = PrincipalRecord {
        name: "carol".into(),
        arn: format!("arn:airlock:iam::{ACCOUNT}:user/carol"),
        kind: PrincipalKind::User,
        principal_id: "AIDAEXAMPLE".into(),
        tags: BTreeMap::from([("team".to_owned(), "ops".to_owned())]),
        created_us: 0,
    };
    let user = Caller { principal: principal.clone(), role_session: None };
    assert_eq!(user.arn(ACCOUNT), "arn:airlock:iam::123456789012:user/carol");
    assert_eq!(
        (user.session_prefix(), user.user_id().as_str(), user.user_name()),
        ("carol", "AIDAEXAMPLE", Some("carol"))
    );
    assert_eq!(user.tags().get("team").map(String::as_str), Some("ops"));
    let role = PrincipalRecord { name: "reader".into(), kind: PrincipalKind::Role, ..principal };
    let session = Caller { principal: role.clone(), role_session: Some("ops-1".into()) };
    assert_eq!(session.arn(ACCOUNT), "arn:airlock:sts::123456789012:assumed-role/reader/ops-1");
    assert_eq!(
        (session.session_prefix(), session.user_id().as_str(), session.user_name()),
        ("ops-1", "AIDAEXAMPLE:ops-1", None)
    );
    let bare_role = Caller { principal: role, role_session: None };
    assert_eq!(bare_role.user_name(), None);
}
