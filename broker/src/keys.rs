//! Access keys in AWS's shapes.

use rand::Rng;

use crate::store::{Principal, Store, StoreError};

/// A freshly minted access key; the secret is shown once.
pub struct NewKey {
    pub access_key_id: String,
    pub secret: String,
}

/// `len` characters drawn uniformly from `alphabet` (a CSPRNG: thread_rng is ChaCha-based).
pub fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

/// Mints a key for `principal` and stores it.
pub async fn mint(store: &dyn Store, principal: &Principal) -> Result<NewKey, StoreError> {
    let key = NewKey {
        access_key_id: format!("AKIA{}", random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        secret: random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40),
    };
    store.add_access_key(principal, &key.access_key_id, &key.secret).await?;
    Ok(key)
}

/// The built-in administrator of an account.
pub fn admin(account: &str) -> Principal {
    Principal { name: "admin".into(), arn: format!("arn:airlock:iam::{account}:user/admin") }
}
