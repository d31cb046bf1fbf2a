//! The embedded SQLite store (sqlx runtime queries, so builds need no database).

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;

use super::*;

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE principals (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE
);
CREATE TABLE access_keys (
    access_key_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL REFERENCES principals(name),
    secret TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE activations (
    activation_id TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    iam_role TEXT NOT NULL,
    description TEXT NOT NULL,
    default_instance_name TEXT NOT NULL,
    registration_limit INTEGER NOT NULL,
    registrations INTEGER NOT NULL DEFAULT 0,
    expires_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY,
    activation_id TEXT NOT NULL,
    iam_role TEXT NOT NULL,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    registered_us INTEGER NOT NULL,
    last_ping_us INTEGER,
    agent_version TEXT NOT NULL DEFAULT '',
    platform_type TEXT NOT NULL DEFAULT '',
    platform_name TEXT NOT NULL DEFAULT '',
    platform_version TEXT NOT NULL DEFAULT '',
    computer_name TEXT NOT NULL DEFAULT '',
    ip_address TEXT NOT NULL DEFAULT ''
);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    document TEXT NOT NULL,
    owner_arn TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER,
    details TEXT NOT NULL DEFAULT '',
    exit_code INTEGER
);
CREATE INDEX sessions_by_start ON sessions(start_us);
"#,
    super::sqlite_iam::MIGRATION_2,
    super::sqlite_iam::MIGRATION_3,
    super::sqlite_documents::MIGRATION_4,
    // What DescribeSessions shows of the preferences a session started with.
    r#"
ALTER TABLE sessions ADD COLUMN max_duration_minutes INTEGER;
ALTER TABLE sessions ADD COLUMN s3_output_url TEXT;
ALTER TABLE sessions ADD COLUMN cloudwatch_output_url TEXT;
"#,
];

/// SQLite in the data folder.
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
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
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&mut *tx).await?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            // The version is our own integer, never input.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", i + 1)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn instance_from(row: &SqliteRow) -> Result<Instance, sqlx::Error> {
    Ok(Instance {
        instance_id: row.try_get("instance_id")?,
        activation_id: row.try_get("activation_id")?,
        iam_role: row.try_get("iam_role")?,
        name: row.try_get("name")?,
        fingerprint: row.try_get("fingerprint")?,
        registered_us: row.try_get("registered_us")?,
        last_ping_us: row.try_get("last_ping_us")?,
        host: HostInfo {
            agent_version: row.try_get("agent_version")?,
            platform_type: row.try_get("platform_type")?,
            platform_name: row.try_get("platform_name")?,
            platform_version: row.try_get("platform_version")?,
            computer_name: row.try_get("computer_name")?,
            ip_address: row.try_get("ip_address")?,
        },
    })
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

fn session_from(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(SessionRecord {
        session_id: row.try_get("session_id")?,
        target: row.try_get("target")?,
        document: row.try_get("document")?,
        owner_arn: row.try_get("owner_arn")?,
        reason: row.try_get("reason")?,
        status: SessionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("session status {status:?}")))?,
        start_us: row.try_get("start_us")?,
        end_us: row.try_get("end_us")?,
        details: row.try_get("details")?,
        exit_code: row.try_get("exit_code")?,
        max_duration_minutes: row.try_get("max_duration_minutes")?,
        s3_output_url: row.try_get("s3_output_url")?,
        cloudwatch_output_url: row.try_get("cloudwatch_output_url")?,
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
        let mut tx = self.pool.begin().await?;
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

    async fn insert_instance(&self, i: &Instance) -> Result<(), StoreError> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn instance_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Instance>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE fingerprint = ?")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(instance_from).transpose()?)
    }

    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE instance_id = ?")
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(instance_from).transpose()?)
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY instance_id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(instance_from).collect::<Result<_, _>>()?)
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

    async fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sessions WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from).transpose()
    }

    async fn sessions(&self, active: bool) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = if active {
            "SELECT * FROM sessions WHERE end_us IS NULL ORDER BY start_us DESC, session_id"
        } else {
            "SELECT * FROM sessions WHERE end_us IS NOT NULL ORDER BY start_us DESC, session_id"
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(session_from).collect()
    }

    async fn fail_orphaned_sessions(&self, now_us: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = 'Failed', end_us = ?, details = 'the broker restarted while the session was active' \
             WHERE end_us IS NULL",
        )
        .bind(now_us)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
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

    #[tokio::test]
    async fn orphaned_sessions_fail_on_restart() {
        let (_d, s) = store().await;
        let rec = SessionRecord {
            session_id: "a-1".into(),
            target: "t".into(),
            document: "d".into(),
            owner_arn: "o".into(),
            reason: String::new(),
            status: SessionStatus::Connected,
            start_us: 1,
            end_us: None,
            details: String::new(),
            exit_code: None,
            max_duration_minutes: Some(60),
            s3_output_url: Some("s3://b/k.cast".into()),
            cloudwatch_output_url: None,
        };
        s.insert_session(&rec).await.unwrap();
        assert_eq!(s.fail_orphaned_sessions(2).await.unwrap(), 1);
        assert_eq!(s.session("a-1").await.unwrap().unwrap().status, SessionStatus::Failed);
    }
}
