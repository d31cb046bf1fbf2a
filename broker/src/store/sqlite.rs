//! The embedded SQLite store (sqlx runtime queries, so builds need no database).

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;

use super::*;

/// The schema, one numbered file per version under `broker/migrations/`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The newest version the hand-written migrator knew: it kept the version in
/// `PRAGMA user_version`, and its versions 1 to 5 are the files 0001 to 0005 verbatim.
const LEGACY_LAST_VERSION: i64 = 5;

/// An instance's columns: the instance row without the deregistration stamp.
const INSTANCE_COLUMNS: &str = "i.instance_id, i.activation_id, i.iam_role, i.name, i.fingerprint, \
     i.registered_us, i.last_ping_us, i.agent_version, i.platform_type, i.platform_name, \
     i.platform_version, i.computer_name, i.ip_address";

/// Creates the database file readable by the broker's user only, and tightens an existing
/// one. SQLite gives its `-wal` and `-shm` files the database file's mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Db(sqlx::Error::Io(e));
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(())
}

/// SQLite in the data folder.
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let tracked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_one(&mut *conn)
        .await?;
        let legacy: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *conn).await?;
        if !tracked && legacy > 0 {
            // A database of the hand-written migrator: what it applied is marked as applied,
            // not run again.
            if legacy > LEGACY_LAST_VERSION {
                return Err(StoreError::Corrupt(format!(
                    "schema version {legacy} is newer than this broker knows"
                )));
            }
            MIGRATOR.skip(&mut *conn, Some(legacy)).await?;
            tracing::info!(version = legacy, "database schema now tracked by numbered migrations");
        }
        MIGRATOR.run(&mut *conn).await?;
        Ok(())
    }
}

fn activation_from(row: &SqliteRow) -> Result<Activation, StoreError> {
    Ok(Activation {
        activation_id: row.try_get("activation_id")?,
        code_hash: row.try_get("code_hash")?,
        iam_role: row.try_get("iam_role")?,
        description: row.try_get("description")?,
        default_instance_name: row.try_get("default_instance_name")?,
        registration_limit: row.try_get("registration_limit")?,
        registrations: row.try_get("registrations")?,
        expires_us: row.try_get("expires_us")?,
        created_us: row.try_get("created_us")?,
        tags: serde_json::from_str(&row.try_get::<String, _>("tags")?)
            .map_err(|e| StoreError::Corrupt(format!("activation tags: {e}")))?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn has_principals(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM principals").fetch_one(&self.pool).await?;
        Ok(n > 0)
    }

    async fn activations(&self) -> Result<Vec<Activation>, StoreError> {
        let rows = sqlx::query("SELECT * FROM activations ORDER BY created_us DESC, activation_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(activation_from).collect()
    }

    async fn delete_activation(&self, activation_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM activations WHERE activation_id = ?")
            .bind(activation_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_activation(&self, a: &Activation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO activations (activation_id, code_hash, iam_role, description, default_instance_name, \
             registration_limit, registrations, expires_us, created_us, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&a.activation_id)
        .bind(&a.code_hash)
        .bind(&a.iam_role)
        .bind(&a.description)
        .bind(&a.default_instance_name)
        .bind(a.registration_limit)
        .bind(a.registrations)
        .bind(a.expires_us)
        .bind(a.created_us)
        .bind(serde_json::to_string(&a.tags).unwrap_or_else(|_| "[]".into()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn consume_activation(
        &self,
        activation_id: &str,
        code_hash: &str,
        now_us: i64,
    ) -> Result<Result<Activation, ActivationRefusal>, StoreError> {
        // Immediate: the read below decides the write. A deferred transaction takes only a
        // read lock here and fails with `database is locked` (SQLITE_BUSY_SNAPSHOT, which no
        // busy timeout waits out) when it upgrades after a concurrent registration committed.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT * FROM activations WHERE activation_id = ?")
            .bind(activation_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(Err(ActivationRefusal::NotFound)) };
        let mut a = activation_from(&row)?;
        if a.code_hash != code_hash {
            return Ok(Err(ActivationRefusal::CodeMismatch));
        }
        if a.expires_us <= now_us {
            return Ok(Err(ActivationRefusal::Expired { at_us: a.expires_us }));
        }
        // The guard in the WHERE clause keeps two concurrent registrations from both
        // taking the last slot.
        let done = sqlx::query(
            "UPDATE activations SET registrations = registrations + 1 \
             WHERE activation_id = ? AND registrations < registration_limit",
        )
        .bind(activation_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(Err(ActivationRefusal::Exhausted { limit: a.registration_limit }));
        }
        tx.commit().await?;
        a.registrations += 1;
        Ok(Ok(a))
    }

    async fn insert_instance(&self, i: &Instance, cert_not_after_us: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO instances (instance_id, activation_id, iam_role, name, fingerprint, registered_us) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&i.instance_id)
        .bind(&i.activation_id)
        .bind(&i.iam_role)
        .bind(&i.name)
        .bind(&i.fingerprint)
        .bind(i.registered_us)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO agent_certificates (fingerprint, instance_id, not_after_us, issued_us) VALUES (?, ?, ?, ?)",
        )
        .bind(&i.fingerprint)
        .bind(&i.instance_id)
        .bind(cert_not_after_us)
        .bind(i.registered_us)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn instance_by_certificate(
        &self,
        fingerprint: &str,
        now_us: i64,
    ) -> Result<Option<Instance>, StoreError> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM agent_certificates c JOIN instances i USING (instance_id) \
             WHERE c.fingerprint = ? AND c.not_after_us > ? AND i.deregistered_us IS NULL"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(fingerprint)
            .bind(now_us)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn renew_agent_certificate(
        &self,
        instance_id: &str,
        presented: &str,
        issued: &str,
        not_after_us: i64,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        // Immediate: whether the instance is still registered decides the insert.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let live: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM instances WHERE instance_id = ? AND deregistered_us IS NULL)",
        )
        .bind(instance_id)
        .fetch_one(&mut *tx)
        .await?;
        if !live {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO agent_certificates (fingerprint, instance_id, not_after_us, issued_us) VALUES (?, ?, ?, ?)",
        )
        .bind(issued)
        .bind(instance_id)
        .bind(not_after_us)
        .bind(now_us)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM agent_certificates WHERE instance_id = ? AND fingerprint NOT IN (?, ?)")
            .bind(instance_id)
            .bind(presented)
            .bind(issued)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn deregister_instance(&self, instance_id: &str, now_us: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE instances SET deregistered_us = ? WHERE instance_id = ? AND deregistered_us IS NULL",
        )
        .bind(now_us)
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM agent_certificates WHERE instance_id = ?")
            .bind(instance_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, StoreError> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances i WHERE i.instance_id = ? AND i.deregistered_us IS NULL"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(instance_id).fetch_optional(&self.pool).await?)
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances i WHERE i.deregistered_us IS NULL ORDER BY i.instance_id"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?)
    }

    async fn update_instance_host(
        &self,
        instance_id: &str,
        h: &HostInfo,
        ping_us: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE instances SET agent_version = ?, platform_type = ?, platform_name = ?, platform_version = ?, \
             computer_name = ?, ip_address = ?, last_ping_us = ? WHERE instance_id = ?",
        )
        .bind(&h.agent_version)
        .bind(&h.platform_type)
        .bind(&h.platform_name)
        .bind(&h.platform_version)
        .bind(&h.computer_name)
        .bind(&h.ip_address)
        .bind(ping_us)
        .bind(instance_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_instance(&self, instance_id: &str, ping_us: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET last_ping_us = ? WHERE instance_id = ?")
            .bind(ping_us)
            .bind(instance_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (session_id, target, document, owner_arn, reason, status, start_us, end_us, \
             details, exit_code, max_duration_minutes, s3_output_url, cloudwatch_output_url) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.session_id)
        .bind(&s.target)
        .bind(&s.document)
        .bind(&s.owner_arn)
        .bind(&s.reason)
        .bind(s.status.as_str())
        .bind(s.start_us)
        .bind(s.end_us)
        .bind(&s.details)
        .bind(s.exit_code)
        .bind(s.max_duration_minutes)
        .bind(&s.s3_output_url)
        .bind(&s.cloudwatch_output_url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_session_status(&self, session_id: &str, status: SessionStatus) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET status = ? WHERE session_id = ? AND end_us IS NULL")
            .bind(status.as_str())
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_session(&self, session_id: &str, end: &SessionEnd) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET status = ?, end_us = ?, details = ?, exit_code = ? \
             WHERE session_id = ? AND end_us IS NULL",
        )
        .bind(end.status.as_str())
        .bind(end.end_us)
        .bind(&end.details)
        .bind(end.exit_code)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_session_counts(&self) -> Result<Vec<(SessionStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM sessions WHERE end_us IS NULL GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(status, n)| Some((SessionStatus::parse(&status)?, u64::try_from(n).ok()?)))
            .collect())
    }

    async fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query_as("SELECT * FROM sessions WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    async fn sessions(&self, active: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = if active {
            "SELECT * FROM sessions WHERE end_us IS NULL ORDER BY start_us DESC, session_id"
        } else {
            "SELECT * FROM sessions WHERE end_us IS NOT NULL ORDER BY start_us DESC, session_id"
        };
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
        (dir, s)
    }

    fn activation(limit: i64, expires_us: i64) -> Activation {
        Activation {
            activation_id: "act-1".into(),
            code_hash: "h".into(),
            iam_role: "role".into(),
            description: String::new(),
            default_instance_name: String::new(),
            registration_limit: limit,
            registrations: 0,
            expires_us,
            created_us: 0,
            tags: Vec::new(),
        }
    }

    #[tokio::test]
    async fn activation_limits_and_expiry() {
        let (_d, s) = store().await;
        s.insert_activation(&activation(2, 1_000)).await.unwrap();
        assert_eq!(
            s.consume_activation("nope", "h", 0).await.unwrap().unwrap_err(),
            ActivationRefusal::NotFound
        );
        assert_eq!(
            s.consume_activation("act-1", "x", 0).await.unwrap().unwrap_err(),
            ActivationRefusal::CodeMismatch
        );
        assert_eq!(s.consume_activation("act-1", "h", 0).await.unwrap().unwrap().registrations, 1);
        assert_eq!(s.consume_activation("act-1", "h", 0).await.unwrap().unwrap().registrations, 2);
        assert_eq!(
            s.consume_activation("act-1", "h", 0).await.unwrap().unwrap_err(),
            ActivationRefusal::Exhausted { limit: 2 }
        );
        assert_eq!(
            s.consume_activation("act-1", "h", 1_000).await.unwrap().unwrap_err(),
            ActivationRefusal::Expired { at_us: 1_000 }
        );
    }

    #[tokio::test]
    async fn sessions_move_from_active_to_history_once() {
        let (dir, s) = store().await;
        let rec = SessionRecord {
            session_id: "admin-1".into(),
            target: "mi-0123456789abcdef0".into(),
            document: "SSM-SessionManagerRunShell".into(),
            owner_arn: "arn".into(),
            reason: String::new(),
            status: SessionStatus::Connecting,
            start_us: 5,
            end_us: None,
            details: String::new(),
            exit_code: None,
            max_duration_minutes: Some(60),
            s3_output_url: Some("s3://b/k.cast".into()),
            cloudwatch_output_url: None,
        };
        s.insert_session(&rec).await.unwrap();
        s.set_session_status("admin-1", SessionStatus::Connected).await.unwrap();
        assert_eq!(s.sessions(true).await.unwrap()[0].status, SessionStatus::Connected);
        let end = SessionEnd {
            status: SessionStatus::Terminated,
            end_us: 9,
            details: "bye".into(),
            exit_code: Some(7),
        };
        s.finish_session("admin-1", &end).await.unwrap();
        let second =
            SessionEnd { status: SessionStatus::Failed, end_us: 10, details: "late".into(), exit_code: None };
        s.finish_session("admin-1", &second).await.unwrap();
        assert!(s.sessions(true).await.unwrap().is_empty());
        let got = s.session("admin-1").await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.end_us, got.exit_code, got.details.as_str()),
            (SessionStatus::Terminated, Some(9), Some(7), "bye")
        );
        // Reopening keeps the data and does not re-run migrations.
        drop(s);
        let s = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
        assert_eq!(s.sessions(false).await.unwrap().len(), 1);
    }

    const LEGACY: &str = include_str!("../../tests/fixtures/legacy_schema_v5.sql");

    /// Makes a database as the hand-written migrator left it at `version`, with the sample
    /// rows when `data` is set.
    async fn legacy_database(path: &Path, version: usize, data: bool) {
        let options =
            SqliteConnectOptions::from_str("sqlite://").unwrap().filename(path).create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let mut sections = LEGACY.split("-- @").skip(1);
        for _ in 0..version {
            // Each section starts with the rest of its marker line.
            let sql = sections.next().unwrap().split_once('\n').unwrap().1;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await.unwrap();
        }
        if data {
            let sql = LEGACY.split("-- @data").nth(1).unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&pool).await.unwrap();
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {version}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    #[tokio::test]
    async fn database_of_the_hand_written_migrator_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.db");
        legacy_database(&path, 5, true).await;
        for _ in 0..2 {
            // Twice: the second open finds the migrations tracked and changes nothing.
            let s = SqliteStore::open(&path).await.unwrap();
            assert!(s.has_principals().await.unwrap());
            let instances = s.instances().await.unwrap();
            assert_eq!(instances.len(), 1);
            assert_eq!(
                (instances[0].name.as_str(), instances[0].host.agent_version.as_str()),
                ("host-1", "")
            );
            // The registration certificate stays accepted, until 2046 as it was issued.
            assert!(s.instance_by_certificate("ab12", 2_398_377_599_000_000).await.unwrap().is_some());
            assert!(s.instance_by_certificate("ab12", 2_398_377_600_000_000).await.unwrap().is_none());
            assert_eq!(s.instance_tags("mi-0123456789abcdef0").await.unwrap().len(), 1);
            let session = s.session("admin-0a1b2c3d4e5f6a7b8").await.unwrap().unwrap();
            assert_eq!((session.status, session.exit_code), (SessionStatus::Terminated, Some(0)));
            assert_eq!(s.activations().await.unwrap()[0].registrations, 1);
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&s.pool)
                .await
                .unwrap();
            assert_eq!(applied, MIGRATOR.iter().count() as i64);
            s.pool.close().await;
        }
    }

    #[tokio::test]
    async fn older_legacy_database_gets_the_missing_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.db");
        legacy_database(&path, 3, false).await;
        let s = SqliteStore::open(&path).await.unwrap();
        // Version 4 (documents) and 5 (session preferences) ran.
        assert!(s.sessions(true).await.unwrap().is_empty());
        let docs: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM documents").fetch_one(&s.pool).await.unwrap();
        assert_eq!(docs, 0);
    }

    #[tokio::test]
    async fn deregistration_and_renewal_decide_which_certificates_connect() {
        let (_d, s) = store().await;
        let instance = Instance {
            instance_id: "mi-0123456789abcdef0".into(),
            activation_id: "act-1".into(),
            iam_role: "role".into(),
            name: "h".into(),
            fingerprint: "first".into(),
            registered_us: 10,
            last_ping_us: None,
            host: HostInfo::default(),
        };
        s.insert_instance(&instance, 1_000).await.unwrap();
        assert!(s.instance_by_certificate("first", 999).await.unwrap().is_some());
        assert!(s.instance_by_certificate("first", 1_000).await.unwrap().is_none(), "expired");
        assert!(s
            .renew_agent_certificate(&instance.instance_id, "first", "second", 2_000, 500)
            .await
            .unwrap());
        // The certificate that asked stays valid until the next renewal completes.
        assert!(s.instance_by_certificate("first", 600).await.unwrap().is_some());
        assert!(s.instance_by_certificate("second", 1_500).await.unwrap().is_some());
        assert!(s
            .renew_agent_certificate(&instance.instance_id, "second", "third", 3_000, 700)
            .await
            .unwrap());
        assert!(s.instance_by_certificate("first", 800).await.unwrap().is_none());
        assert!(s.instance_by_certificate("second", 800).await.unwrap().is_some());
        assert!(s.deregister_instance(&instance.instance_id, 900).await.unwrap());
        assert!(!s.deregister_instance(&instance.instance_id, 901).await.unwrap());
        for fp in ["second", "third"] {
            assert!(s.instance_by_certificate(fp, 901).await.unwrap().is_none());
        }
        assert!(s.instances().await.unwrap().is_empty());
        assert!(s.instance(&instance.instance_id).await.unwrap().is_none());
        assert!(!s
            .renew_agent_certificate(&instance.instance_id, "third", "fourth", 4_000, 902)
            .await
            .unwrap());
        assert!(s.instance_by_certificate("fourth", 903).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn parallel_consumers_of_a_one_use_activation_never_see_a_locked_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap());
        s.insert_activation(&activation(1, i64::MAX)).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.consume_activation("act-1", "h", 0).await })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Ok(_)) => won += 1,
                Ok(Err(refusal)) => assert_eq!(refusal, ActivationRefusal::Exhausted { limit: 1 }),
                Err(e) => panic!("contention surfaced as an error: {e}"),
            }
        }
        assert_eq!(won, 1);
    }
}
