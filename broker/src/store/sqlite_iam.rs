//! [`IamStore`] on SQLite.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::iam::*;
use super::{SqliteStore, StoreError};
use crate::audit::{chain_hash, ChainRow, ChainVerifier, GENESIS};

/// The highest audit seq ever assigned, deleted rows included (AUTOINCREMENT keeps it).
const LAST_AUDIT_SEQ: &str =
    "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'), 0)";

fn tags_from(text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("tags: {e}")))
}

fn principal_from(row: &SqliteRow) -> Result<PrincipalRecord, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(PrincipalRecord {
        name: row.try_get("name")?,
        arn: row.try_get("arn")?,
        kind: if kind == "role" { PrincipalKind::Role } else { PrincipalKind::User },
        principal_id: row.try_get("principal_id")?,
        tags: tags_from(&row.try_get::<String, _>("tags")?)?,
        created_us: row.try_get("created_us")?,
    })
}

fn key_from(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        access_key_id: row.try_get("access_key_id")?,
        principal: row.try_get("principal")?,
        secret_sealed: row.try_get("secret")?,
        active: row.try_get::<i64, _>("active")? != 0,
        created_us: row.try_get("created_us")?,
        expires_us: row.try_get("expires_us")?,
        token_hash: row.try_get("token_hash")?,
        session_name: row.try_get("session_name")?,
    })
}

fn audit_from(r: &SqliteRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        at_us: r.try_get("at_us")?,
        principal: r.try_get("principal")?,
        action: r.try_get("action")?,
        resource: r.try_get("resource")?,
        decision: r.try_get("decision")?,
        policy: r.try_get("policy")?,
        sid: r.try_get("sid")?,
        statement_index: r.try_get("statement_index")?,
        source_ip: r.try_get("source_ip")?,
    })
}

fn policy_from(row: &SqliteRow) -> Result<ManagedPolicy, StoreError> {
    Ok(ManagedPolicy {
        name: row.try_get("name")?,
        arn: row.try_get("arn")?,
        document: row.try_get("document")?,
        created_us: row.try_get("created_us")?,
    })
}

#[async_trait]
impl IamStore for SqliteStore {
    async fn create_principal(&self, p: &PrincipalRecord) -> Result<bool, StoreError> {
        let tags = serde_json::to_string(&p.tags).unwrap_or_else(|_| "{}".into());
        let done = sqlx::query(
            "INSERT OR IGNORE INTO principals (name, arn, kind, principal_id, tags, created_us) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&p.name)
        .bind(&p.arn)
        .bind(p.kind.as_str())
        .bind(&p.principal_id)
        .bind(tags)
        .bind(p.created_us)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM principals WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(principal_from).transpose()
    }

    async fn principals(&self, kind: PrincipalKind) -> Result<Vec<PrincipalRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM principals WHERE kind = ? ORDER BY name")
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(principal_from).collect()
    }

    async fn delete_principal(&self, name: &str) -> Result<Deleted, StoreError> {
        // Immediate: the counts below decide the delete, and a deferred transaction would
        // fail with `database is locked` when it upgrades under contention.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(name.to_owned());
        if count("SELECT COUNT(*) FROM principals WHERE name = ?").fetch_one(&mut *tx).await? == 0 {
            return Ok(Deleted::NotFound);
        }
        let keys = count("SELECT COUNT(*) FROM access_keys WHERE principal = ? AND expires_us IS NULL")
            .fetch_one(&mut *tx)
            .await?;
        let inline =
            count("SELECT COUNT(*) FROM inline_policies WHERE principal = ?").fetch_one(&mut *tx).await?;
        let attached =
            count("SELECT COUNT(*) FROM attachments WHERE principal = ?").fetch_one(&mut *tx).await?;
        if keys + inline + attached > 0 {
            return Ok(Deleted::Conflict(format!(
                "{name} still has {keys} access keys, {inline} inline and {attached} attached policies"
            )));
        }
        // As in IAM, a console password and enabled MFA devices are removed first, too.
        let login =
            count("SELECT COUNT(*) FROM login_profiles WHERE user_name = ?").fetch_one(&mut *tx).await?;
        let mfa = count("SELECT COUNT(*) FROM mfa_devices WHERE user_name = ?").fetch_one(&mut *tx).await?;
        if login + mfa > 0 {
            return Ok(Deleted::Conflict(format!(
                "{name} still has {login} login profile and {mfa} enabled MFA devices"
            )));
        }
        sqlx::query("DELETE FROM access_keys WHERE principal = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM principals WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Deleted::Yes)
    }

    async fn set_principal_tags(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(tags).unwrap_or_else(|_| "{}".into());
        sqlx::query("UPDATE principals SET tags = ? WHERE name = ?")
            .bind(text)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_trust_policy(&self, role: &str, document: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE principals SET trust_policy = ? WHERE name = ? AND kind = 'role'")
            .bind(document)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn trust_policy(&self, role: &str) -> Result<Option<String>, StoreError> {
        let doc: Option<Option<String>> =
            sqlx::query_scalar("SELECT trust_policy FROM principals WHERE name = ? AND kind = 'role'")
                .bind(role)
                .fetch_optional(&self.pool)
                .await?;
        Ok(doc.flatten())
    }

    async fn insert_key(&self, k: &KeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO access_keys (access_key_id, principal, secret, active, created_us, expires_us, token_hash, \
             session_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.access_key_id)
        .bind(&k.principal)
        .bind(&k.secret_sealed)
        .bind(k.active as i64)
        .bind(k.created_us)
        .bind(k.expires_us)
        .bind(&k.token_hash)
        .bind(&k.session_name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn key(&self, access_key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM access_keys WHERE access_key_id = ?")
            .bind(access_key_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from).transpose()
    }

    async fn keys_of(&self, principal: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM access_keys WHERE principal = ? AND expires_us IS NULL ORDER BY created_us, access_key_id",
        )
        .bind(principal)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from).collect()
    }

    async fn set_key_active(
        &self,
        principal: &str,
        access_key_id: &str,
        active: bool,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE access_keys SET active = ? WHERE principal = ? AND access_key_id = ?")
            .bind(active as i64)
            .bind(principal)
            .bind(access_key_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_key(&self, principal: &str, access_key_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM access_keys WHERE principal = ? AND access_key_id = ?")
            .bind(principal)
            .bind(access_key_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_expired_keys(&self, now_us: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM access_keys WHERE expires_us IS NOT NULL AND expires_us < ?")
            .bind(now_us)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn put_inline_policy(&self, principal: &str, name: &str, document: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT OR REPLACE INTO inline_policies (principal, name, document) VALUES (?, ?, ?)")
            .bind(principal)
            .bind(name)
            .bind(document)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_inline_policy(&self, principal: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM inline_policies WHERE principal = ? AND name = ?")
            .bind(principal)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn inline_policies(&self, principal: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT name, document FROM inline_policies WHERE principal = ? ORDER BY name")
                .bind(principal)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok((r.try_get("name")?, r.try_get("document")?))).collect()
    }

    async fn create_managed_policy(&self, p: &ManagedPolicy) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO managed_policies (name, arn, document, created_us) VALUES (?, ?, ?, ?)",
        )
        .bind(&p.name)
        .bind(&p.arn)
        .bind(&p.document)
        .bind(p.created_us)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_managed_policy(&self, name: &str) -> Result<Deleted, StoreError> {
        // Immediate: the attachment count decides the delete.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let uses: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attachments WHERE policy = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if uses > 0 {
            return Ok(Deleted::Conflict(format!("policy {name} is attached to {uses} principals")));
        }
        let done =
            sqlx::query("DELETE FROM managed_policies WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 { Deleted::Yes } else { Deleted::NotFound })
    }

    async fn managed_policies(&self) -> Result<Vec<ManagedPolicy>, StoreError> {
        let rows = sqlx::query("SELECT * FROM managed_policies ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(policy_from).collect()
    }

    async fn attach_policy(&self, principal: &str, policy: &str) -> Result<bool, StoreError> {
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM managed_policies WHERE name = ?")
            .bind(policy)
            .fetch_one(&self.pool)
            .await?;
        if exists == 0 {
            return Ok(false);
        }
        sqlx::query("INSERT OR IGNORE INTO attachments (principal, policy) VALUES (?, ?)")
            .bind(principal)
            .bind(policy)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    async fn detach_policy(&self, principal: &str, policy: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM attachments WHERE principal = ? AND policy = ?")
            .bind(principal)
            .bind(policy)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn attached_policies(&self, principal: &str) -> Result<Vec<ManagedPolicy>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.* FROM managed_policies m JOIN attachments a ON a.policy = m.name WHERE a.principal = ? ORDER BY m.name",
        )
        .bind(principal)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(policy_from).collect()
    }

    async fn add_instance_tags(
        &self,
        instance_id: &str,
        tags: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (k, v) in tags {
            sqlx::query("INSERT OR REPLACE INTO instance_tags (instance_id, key, value) VALUES (?, ?, ?)")
                .bind(instance_id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn remove_instance_tags(&self, instance_id: &str, keys: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for k in keys {
            sqlx::query("DELETE FROM instance_tags WHERE instance_id = ? AND key = ?")
                .bind(instance_id)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn instance_tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM instance_tags WHERE instance_id = ?")
            .bind(instance_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("key")?, r.try_get("value")?))).collect()
    }

    async fn all_instance_tags(&self) -> Result<HashMap<String, BTreeMap<String, String>>, StoreError> {
        let rows =
            sqlx::query("SELECT instance_id, key, value FROM instance_tags").fetch_all(&self.pool).await?;
        let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for r in &rows {
            out.entry(r.try_get("instance_id")?).or_default().insert(r.try_get("key")?, r.try_get("value")?);
        }
        Ok(out)
    }

    async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock before reading the chain's head, so two appends
        // queue up instead of both chaining onto the same predecessor.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let last = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (last_seq, prev) = match &last {
            Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<Option<String>, _>("hash")?),
            None => (0, None),
        };
        let assigned: i64 = sqlx::query_scalar(LAST_AUDIT_SEQ).fetch_one(&mut *tx).await?;
        // The seq is hashed, so it is chosen here rather than by the insert; past the highest
        // ever assigned, so rows deleted from the end still show as a hole.
        let seq = last_seq.max(assigned) + 1;
        let prev = prev.unwrap_or_else(|| GENESIS.to_owned());
        let hash = chain_hash(&prev, seq, e);
        sqlx::query(
            "INSERT INTO audit_events (seq, at_us, principal, action, resource, decision, policy, sid, \
             statement_index, source_ip, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(e.at_us)
        .bind(&e.principal)
        .bind(&e.action)
        .bind(&e.resource)
        .bind(&e.decision)
        .bind(&e.policy)
        .bind(&e.sid)
        .bind(e.statement_index)
        .bind(&e.source_ip)
        .bind(prev)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_events(&self, limit: i64, offset: i64) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events ORDER BY seq DESC LIMIT ? OFFSET ?")
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        // One read transaction is one WAL snapshot: events appended meanwhile are neither
        // half-seen nor mistaken for rows deleted from the end.
        let mut tx = self.pool.begin().await?;
        let assigned: i64 = sqlx::query_scalar(LAST_AUDIT_SEQ).fetch_one(&mut *tx).await?;
        let mut verifier = ChainVerifier::new();
        {
            let mut rows = sqlx::query("SELECT * FROM audit_events ORDER BY seq").fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                verifier.push(ChainRow {
                    seq: r.try_get("seq")?,
                    event: audit_from(&r)?,
                    prev_hash: r.try_get("prev_hash")?,
                    hash: r.try_get("hash")?,
                });
            }
        }
        tx.rollback().await?;
        Ok(verifier.finish(assigned))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at_us: n,
            principal: "arn:airlock:iam::1:user/u".into(),
            action: "ssm:StartSession".into(),
            resource: format!("r{n}"),
            decision: "allowed".into(),
            policy: None,
            sid: None,
            statement_index: None,
            source_ip: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn concurrent_appends_form_one_chain_and_tampering_shows() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap());
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let s = s.clone();
                tokio::spawn(async move { s.append_audit(&event(n)).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let r = s.verify_audit_chain().await.unwrap();
        assert_eq!((r.valid, r.events, r.first_broken_seq), (true, 40, None), "{}", r.message);
        assert_eq!(s.audit_events(100, 0).await.unwrap().len(), 40);

        sqlx::query("UPDATE audit_events SET resource = 'x' WHERE seq = 7").execute(&s.pool).await.unwrap();
        let r = s.verify_audit_chain().await.unwrap();
        assert_eq!((r.valid, r.first_broken_seq), (false, Some(7)), "{}", r.message);
        sqlx::query("UPDATE audit_events SET resource = 'r' || at_us WHERE seq = 7")
            .execute(&s.pool)
            .await
            .unwrap();
        assert!(s.verify_audit_chain().await.unwrap().valid);

        // Deleting the newest event is seen, and appending afterwards does not hide it.
        sqlx::query("DELETE FROM audit_events WHERE seq = 40").execute(&s.pool).await.unwrap();
        assert_eq!(s.verify_audit_chain().await.unwrap().first_broken_seq, Some(40));
        s.append_audit(&event(99)).await.unwrap();
        let r = s.verify_audit_chain().await.unwrap();
        assert_eq!((r.valid, r.events, r.first_broken_seq), (false, 40, Some(40)), "{}", r.message);
    }

    #[tokio::test]
    async fn rows_from_before_the_chain_are_legacy() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
        for n in 0..2 {
            // As written by schema version 2: no hash columns filled.
            sqlx::query(
                "INSERT INTO audit_events (at_us, principal, action, resource, decision, source_ip) \
                 VALUES (?, 'p', 'a', 'r', 'allowed', 'ip')",
            )
            .bind(n)
            .execute(&s.pool)
            .await
            .unwrap();
        }
        let r = s.verify_audit_chain().await.unwrap();
        assert!(r.valid && r.message.contains("all 2 events"), "{}", r.message);
        s.append_audit(&event(5)).await.unwrap();
        let r = s.verify_audit_chain().await.unwrap();
        assert_eq!((r.valid, r.events), (true, 3), "{}", r.message);
        assert!(r.message.contains("first 2 events are unchained legacy rows"), "{}", r.message);
    }
}
