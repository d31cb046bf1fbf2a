//! Console credentials: login profiles (passwords) and virtual MFA devices.

use async_trait::async_trait;

use super::StoreError;

/// A user's console password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginProfile {
    /// The user it belongs to.
    pub user_name: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// Whether the user must choose a new password at the next sign-in.
    pub password_reset_required: bool,
    /// When it was created, Unix time in microseconds.
    pub created_us: i64,
}

/// A virtual MFA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaDevice {
    /// Its ARN, IAM's `SerialNumber`.
    pub serial_number: String,
    /// Its name.
    pub name: String,
    /// The base32 TOTP seed, sealed under the master key.
    pub seed_sealed: String,
    /// When it was created, Unix time in microseconds.
    pub created_us: i64,
    /// The user it is enabled for, if any.
    pub user_name: Option<String>,
    /// When it was enabled, Unix time in microseconds.
    pub enabled_us: Option<i64>,
    /// The newest TOTP step accepted from it.
    pub last_step: i64,
}

/// Login profiles and MFA devices.
#[async_trait]
pub trait LoginStore: Send + Sync {
    /// Creates a user's login profile; false if it has one.
    async fn create_login_profile(&self, p: &LoginProfile) -> Result<bool, StoreError>;
    /// A user's login profile.
    async fn login_profile(&self, user: &str) -> Result<Option<LoginProfile>, StoreError>;
    /// Changes a login profile's hash and/or reset flag; false if the user has none.
    async fn update_login_profile(
        &self,
        user: &str,
        password_hash: Option<&str>,
        reset_required: Option<bool>,
    ) -> Result<bool, StoreError>;
    /// Deletes a login profile; false if the user has none.
    async fn delete_login_profile(&self, user: &str) -> Result<bool, StoreError>;

    /// Creates a device; false if the name or serial number is taken.
    async fn create_mfa_device(&self, d: &MfaDevice) -> Result<bool, StoreError>;
    /// One device.
    async fn mfa_device(&self, serial_number: &str) -> Result<Option<MfaDevice>, StoreError>;
    /// The devices enabled for a user, by serial number.
    async fn mfa_devices_of(&self, user: &str) -> Result<Vec<MfaDevice>, StoreError>;
    /// Enables an unassigned device for a user, its codes up to `step` spent; false if the
    /// device is missing or already enabled.
    async fn enable_mfa_device(
        &self,
        serial_number: &str,
        user: &str,
        step: i64,
        now_us: i64,
    ) -> Result<bool, StoreError>;
    /// Unassigns a device from a user; false if it is not enabled for that user.
    async fn deactivate_mfa_device(&self, serial_number: &str, user: &str) -> Result<bool, StoreError>;
    /// Deletes an unassigned device; `Conflict` while it is enabled.
    async fn delete_mfa_device(&self, serial_number: &str) -> Result<super::Deleted, StoreError>;
    /// Spends the code of `step` atomically: true only if no code of this or a later step
    /// was accepted before (so a code works once).
    async fn spend_mfa_step(&self, serial_number: &str, step: i64) -> Result<bool, StoreError>;
}
