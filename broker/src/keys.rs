//! Access keys and principal ids in AWS's shapes, and the first administrator.

use rand::Rng;

use crate::app::now_us;
use crate::secrets::{MasterKey, SecretError};
use crate::store::{KeyRecord, PrincipalKind, PrincipalRecord, Store, StoreError};

/// The inline policy of the built-in administrator.
pub const ADMIN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Everything","Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Errors minting keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("no principal named {0}")]
    NoPrincipal(String),
}

/// A freshly minted access key; the secret is shown once.
pub struct NewKey {
    pub access_key_id: String,
    pub secret: String,
    pub created_us: i64,
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `len` characters drawn uniformly from `alphabet` (rand's thread generator is a CSPRNG).
pub fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

/// A new access key id: `AKIA…` (long-term) or `ASIA…` (temporary).
pub fn key_id(temporary: bool) -> String {
    format!("{}{}", if temporary { "ASIA" } else { "AKIA" }, random_from(UPPER, 16))
}

/// A new 40-character secret.
pub fn secret() -> String {
    random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40)
}

/// A new principal id: `AIDA…` for users, `AROA…` for roles.
pub fn principal_id(kind: PrincipalKind) -> String {
    let prefix = if kind == PrincipalKind::User { "AIDA" } else { "AROA" };
    format!("{prefix}{}", random_from(UPPER, 17))
}

/// Mints a long-term key for `principal` and stores it sealed.
pub async fn mint(store: &dyn Store, master: &MasterKey, principal: &str) -> Result<NewKey, KeyError> {
    if store.principal(principal).await?.is_none() {
        return Err(KeyError::NoPrincipal(principal.to_owned()));
    }
    let key = NewKey { access_key_id: key_id(false), secret: secret(), created_us: now_us() };
    store
        .insert_key(&KeyRecord {
            access_key_id: key.access_key_id.clone(),
            principal: principal.to_owned(),
            secret_sealed: master.seal(&key.secret)?,
            active: true,
            created_us: key.created_us,
            expires_us: None,
            token_hash: None,
            session_name: None,
        })
        .await?;
    Ok(key)
}

/// The built-in administrator of an account.
pub fn admin(account: &str) -> PrincipalRecord {
    PrincipalRecord {
        name: "admin".into(),
        arn: format!("arn:airlock:iam::{account}:user/admin"),
        kind: PrincipalKind::User,
        principal_id: principal_id(PrincipalKind::User),
        tags: Default::default(),
        created_us: now_us(),
    }
}

/// On a fresh store: creates `admin` with full rights and returns its first key.
pub async fn bootstrap_admin(
    store: &dyn Store,
    master: &MasterKey,
    account: &str,
) -> Result<Option<NewKey>, KeyError> {
    if store.has_principals().await? {
        return Ok(None);
    }
    let admin = admin(account);
    store.create_principal(&admin).await?;
    store.put_inline_policy(&admin.name, "AdministratorAccess", ADMIN_POLICY).await?;
    Ok(Some(mint(store, master, &admin.name).await?))
}
