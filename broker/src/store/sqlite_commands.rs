//! [`CommandStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::commands::*;
use super::{SqliteStore, StoreError};

fn command_from(row: &SqliteRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        command_id: row.try_get("command_id")?,
        document_name: row.try_get("document_name")?,
        document_version: row.try_get("document_version")?,
        comment: row.try_get("comment")?,
        parameters: row.try_get("parameters")?,
        script: row.try_get("script")?,
        working_directory: row.try_get("working_directory")?,
        execution_timeout_s: row.try_get("execution_timeout_s")?,
        instance_ids: row.try_get("instance_ids")?,
        targets: row.try_get("targets")?,
        requested_us: row.try_get("requested_us")?,
        timeout_seconds: row.try_get("timeout_seconds")?,
        max_concurrency: row.try_get("max_concurrency")?,
        max_errors: row.try_get("max_errors")?,
        status: parse_status(&row.try_get::<String, _>("status")?)?,
        status_details: row.try_get("status_details")?,
        owner_arn: row.try_get("owner_arn")?,
    })
}

fn invocation_from(row: &SqliteRow) -> Result<InvocationRecord, StoreError> {
    Ok(InvocationRecord {
        command_id: row.try_get("command_id")?,
        instance_id: row.try_get("instance_id")?,
        seq: row.try_get("seq")?,
        status: Some(parse_status(&row.try_get::<String, _>("status")?)?),
        status_details: row.try_get("status_details")?,
        delivered: row.try_get::<i64, _>("delivered")? != 0,
        started_us: row.try_get("started_us")?,
        ended_us: row.try_get("ended_us")?,
        exit_code: row.try_get("exit_code")?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
        stdout_bytes: row.try_get("stdout_bytes")?,
        stderr_bytes: row.try_get("stderr_bytes")?,
        stdout_sha256: row.try_get("stdout_sha256")?,
        stderr_sha256: row.try_get("stderr_sha256")?,
    })
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn insert_command(
        &self,
        c: &CommandRecord,
        invocations: &[InvocationRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO commands (command_id, document_name, document_version, comment, parameters, \
             script, working_directory, execution_timeout_s, instance_ids, targets, requested_us, \
             timeout_seconds, max_concurrency, max_errors, status, status_details, owner_arn) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.command_id)
        .bind(&c.document_name)
        .bind(&c.document_version)
        .bind(&c.comment)
        .bind(&c.parameters)
        .bind(&c.script)
        .bind(&c.working_directory)
        .bind(c.execution_timeout_s)
        .bind(&c.instance_ids)
        .bind(&c.targets)
        .bind(c.requested_us)
        .bind(c.timeout_seconds)
        .bind(&c.max_concurrency)
        .bind(&c.max_errors)
        .bind(c.status.as_str())
        .bind(&c.status_details)
        .bind(&c.owner_arn)
        .execute(&mut *tx)
        .await?;
        for i in invocations {
            sqlx::query(
                "INSERT INTO command_invocations (command_id, instance_id, seq, status, status_details, \
                 delivered, started_us, ended_us, exit_code, stdout, stderr, stdout_bytes, stderr_bytes, \
                 stdout_sha256, stderr_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&i.command_id)
            .bind(&i.instance_id)
            .bind(i.seq)
            .bind(i.status().as_str())
            .bind(&i.status_details)
            .bind(i64::from(i.delivered))
            .bind(i.started_us)
            .bind(i.ended_us)
            .bind(i.exit_code)
            .bind(&i.stdout)
            .bind(&i.stderr)
            .bind(i.stdout_bytes)
            .bind(i.stderr_bytes)
            .bind(&i.stdout_sha256)
            .bind(&i.stderr_sha256)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_command_status(
        &self,
        command_id: &str,
        status: RunStatus,
        details: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE commands SET status = ?, status_details = ? WHERE command_id = ?")
            .bind(status.as_str())
            .bind(details)
            .bind(command_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn update_invocation(&self, i: &InvocationRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE command_invocations SET status = ?, status_details = ?, delivered = ?, started_us = ?, \
             ended_us = ?, exit_code = ?, stdout = ?, stderr = ?, stdout_bytes = ?, stderr_bytes = ?, \
             stdout_sha256 = ?, stderr_sha256 = ? WHERE command_id = ? AND instance_id = ?",
        )
        .bind(i.status().as_str())
        .bind(&i.status_details)
        .bind(i64::from(i.delivered))
        .bind(i.started_us)
        .bind(i.ended_us)
        .bind(i.exit_code)
        .bind(&i.stdout)
        .bind(&i.stderr)
        .bind(i.stdout_bytes)
        .bind(i.stderr_bytes)
        .bind(&i.stdout_sha256)
        .bind(&i.stderr_sha256)
        .bind(&i.command_id)
        .bind(&i.instance_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM commands WHERE command_id = ?")
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(command_from).transpose()
    }

    async fn commands(&self, instance_id: Option<&str>) -> Result<Vec<CommandRecord>, StoreError> {
        let rows = match instance_id {
            None => {
                sqlx::query("SELECT * FROM commands ORDER BY requested_us DESC, command_id")
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(instance) => {
                sqlx::query(
                    "SELECT c.* FROM commands c WHERE EXISTS (SELECT 1 FROM command_invocations i \
                     WHERE i.command_id = c.command_id AND i.instance_id = ?) \
                     ORDER BY c.requested_us DESC, c.command_id",
                )
                .bind(instance)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(command_from).collect()
    }

    async fn invocations(
        &self,
        command_id: Option<&str>,
        instance_id: Option<&str>,
    ) -> Result<Vec<InvocationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.* FROM command_invocations i JOIN commands c ON c.command_id = i.command_id \
             WHERE (?1 IS NULL OR i.command_id = ?1) AND (?2 IS NULL OR i.instance_id = ?2) \
             ORDER BY c.requested_us DESC, i.command_id, i.seq",
        )
        .bind(command_id)
        .bind(instance_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invocation_from).collect()
    }

    async fn unfinished_commands(&self) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT command_id FROM commands WHERE status IN ('Pending', 'InProgress', 'Cancelling') \
             ORDER BY requested_us",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}
