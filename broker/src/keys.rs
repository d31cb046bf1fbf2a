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
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing or opening the secret failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The named principal does not exist.
    #[error("no principal named {0}")]
    NoPrincipal(String),
}

/// A freshly minted access key; the secret is shown once.
pub struct NewKey {
    /// The new access key id.
    pub access_key_id: String,
    /// The secret access key, in clear.
    pub secret: String,
    /// When the key was made, Unix time in microseconds.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::{app, user, ACCOUNT};

    fn drawn_from(s: &str, alphabet: &[u8]) -> bool {
        s.bytes().all(|b| alphabet.contains(&b))
    }

    #[test]
    fn ids_and_secrets_have_aws_shapes() {
        let (long, temp) = (key_id(false), key_id(true));
        assert!(long.starts_with("AKIA") && temp.starts_with("ASIA"), "{long} {temp}");
        assert_eq!((long.len(), temp.len()), (20, 20));
        assert!(drawn_from(&long[4..], UPPER) && drawn_from(&temp[4..], UPPER));
        assert_ne!(key_id(false), key_id(false));
        let s = secret();
        assert_eq!(s.len(), 40);
        assert!(drawn_from(&s, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"));
        assert_ne!(secret(), secret());
        let (u, r) = (principal_id(PrincipalKind::User), principal_id(PrincipalKind::Role));
        assert!(u.starts_with("AIDA") && r.starts_with("AROA"), "{u} {r}");
        assert_eq!((u.len(), r.len()), (21, 21));
    }

    #[test]
    fn draws_use_the_whole_alphabet() {
        let s = random_from(b"ab", 200);
        assert_eq!(s.len(), 200);
        assert!(s.contains('a') && s.contains('b') && drawn_from(&s, b"ab"));
        assert_eq!(random_from(b"x", 3), "xxx");
    }

    #[tokio::test]
    async fn minted_keys_are_stored_sealed_and_active() {
        let t = app().await;
        let app = &t.app;
        let store = app.store.as_ref();
        assert!(
            matches!(mint(store, &app.master, "nobody").await, Err(KeyError::NoPrincipal(n)) if n == "nobody")
        );
        user(app, "carol", None).await;
        let key = mint(store, &app.master, "carol").await.unwrap();
        let stored = store.key(&key.access_key_id).await.unwrap().unwrap();
        assert_eq!(stored.principal, "carol");
        assert!(stored.active && stored.expires_us.is_none() && stored.token_hash.is_none());
        assert_ne!(stored.secret_sealed, key.secret);
        assert_eq!(app.master.open(&stored.secret_sealed).unwrap(), key.secret);
        assert_eq!(stored.created_us, key.created_us);
        assert!(key.created_us > 0);
    }

    #[tokio::test]
    async fn the_first_administrator_is_created_once() {
        let t = app().await;
        let app = &t.app;
        let store = app.store.as_ref();
        let key = bootstrap_admin(store, &app.master, ACCOUNT).await.unwrap().unwrap();
        let admin = store.principal("admin").await.unwrap().unwrap();
        assert_eq!(admin.arn, format!("arn:airlock:iam::{ACCOUNT}:user/admin"));
        assert_eq!(admin.kind, PrincipalKind::User);
        assert!(admin.principal_id.starts_with("AIDA"));
        assert_eq!(
            store.inline_policies("admin").await.unwrap(),
            vec![("AdministratorAccess".to_owned(), ADMIN_POLICY.to_owned())]
        );
        assert_eq!(store.key(&key.access_key_id).await.unwrap().unwrap().principal, "admin");
        assert!(bootstrap_admin(store, &app.master, ACCOUNT).await.unwrap().is_none());
    }
}
