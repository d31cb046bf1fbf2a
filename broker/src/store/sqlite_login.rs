//! [`LoginStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::login::*;
use super::{Deleted, SqliteStore, StoreError};

fn profile_from(row: &SqliteRow) -> Result<LoginProfile, StoreError> {
    Ok(LoginProfile {
        user_name: row.try_get("user_name")?,
        password_hash: row.try_get("password_hash")?,
        password_reset_required: row.try_get::<i64, _>("password_reset_required")? != 0,
        created_us: row.try_get("created_us")?,
    })
}

fn device_from(row: &SqliteRow) -> Result<MfaDevice, StoreError> {
    Ok(MfaDevice {
        serial_number: row.try_get("serial_number")?,
        name: row.try_get("name")?,
        seed_sealed: row.try_get("seed_sealed")?,
        created_us: row.try_get("created_us")?,
        user_name: row.try_get("user_name")?,
        enabled_us: row.try_get("enabled_us")?,
        last_step: row.try_get("last_step")?,
    })
}

#[async_trait]
impl LoginStore for SqliteStore {
    async fn create_login_profile(&self, p: &LoginProfile) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO login_profiles (user_name, password_hash, password_reset_required, created_us) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&p.user_name)
        .bind(&p.password_hash)
        .bind(p.password_reset_required as i64)
        .bind(p.created_us)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn login_profile(&self, user: &str) -> Result<Option<LoginProfile>, StoreError> {
        let row = sqlx::query("SELECT * FROM login_profiles WHERE user_name = ?")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(profile_from).transpose()
    }

    async fn update_login_profile(
        &self,
        user: &str,
        password_hash: Option<&str>,
        reset_required: Option<bool>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE login_profiles SET password_hash = COALESCE(?, password_hash), \
             password_reset_required = COALESCE(?, password_reset_required) WHERE user_name = ?",
        )
        .bind(password_hash)
        .bind(reset_required.map(i64::from))
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_login_profile(&self, user: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM login_profiles WHERE user_name = ?")
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_mfa_device(&self, d: &MfaDevice) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO mfa_devices (serial_number, name, seed_sealed, created_us, user_name, \
             enabled_us, last_step) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.serial_number)
        .bind(&d.name)
        .bind(&d.seed_sealed)
        .bind(d.created_us)
        .bind(&d.user_name)
        .bind(d.enabled_us)
        .bind(d.last_step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mfa_device(&self, serial_number: &str) -> Result<Option<MfaDevice>, StoreError> {
        let row = sqlx::query("SELECT * FROM mfa_devices WHERE serial_number = ?")
            .bind(serial_number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from).transpose()
    }

    async fn mfa_devices_of(&self, user: &str) -> Result<Vec<MfaDevice>, StoreError> {
        let rows = sqlx::query("SELECT * FROM mfa_devices WHERE user_name = ? ORDER BY serial_number")
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from).collect()
    }

    async fn enable_mfa_device(
        &self,
        serial_number: &str,
        user: &str,
        step: i64,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mfa_devices SET user_name = ?, enabled_us = ?, last_step = MAX(last_step, ?) \
             WHERE serial_number = ? AND user_name IS NULL",
        )
        .bind(user)
        .bind(now_us)
        .bind(step)
        .bind(serial_number)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn deactivate_mfa_device(&self, serial_number: &str, user: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE mfa_devices SET user_name = NULL, enabled_us = NULL WHERE serial_number = ? AND user_name = ?",
        )
        .bind(serial_number)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_mfa_device(&self, serial_number: &str) -> Result<Deleted, StoreError> {
        let done = sqlx::query("DELETE FROM mfa_devices WHERE serial_number = ? AND user_name IS NULL")
            .bind(serial_number)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Deleted::Yes);
        }
        Ok(match self.mfa_device(serial_number).await? {
            Some(d) => Deleted::Conflict(format!(
                "the device is enabled for user {}; deactivate it first",
                d.user_name.unwrap_or_default()
            )),
            None => Deleted::NotFound,
        })
    }

    async fn spend_mfa_step(&self, serial_number: &str, step: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE mfa_devices SET last_step = ? WHERE serial_number = ? AND last_step < ?")
                .bind(step)
                .bind(serial_number)
                .bind(step)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (store, dir)
    }

    fn device(serial: &str) -> MfaDevice {
        MfaDevice {
            serial_number: serial.into(),
            name: serial.rsplit('/').next().unwrap().into(),
            seed_sealed: "enc1:x".into(),
            created_us: 1,
            user_name: None,
            enabled_us: None,
            last_step: 0,
        }
    }

    #[tokio::test]
    async fn a_code_step_is_spent_once_and_older_ones_never() {
        let (store, _dir) = store().await;
        assert!(store.create_mfa_device(&device("arn:x:mfa/a")).await.unwrap());
        assert!(!store.create_mfa_device(&device("arn:x:mfa/a")).await.unwrap(), "taken");
        assert!(store.spend_mfa_step("arn:x:mfa/a", 100).await.unwrap());
        assert!(!store.spend_mfa_step("arn:x:mfa/a", 100).await.unwrap(), "replay");
        assert!(!store.spend_mfa_step("arn:x:mfa/a", 99).await.unwrap(), "older");
        assert!(store.spend_mfa_step("arn:x:mfa/a", 101).await.unwrap());
        assert!(!store.spend_mfa_step("arn:x:mfa/none", 5).await.unwrap());
    }
}
