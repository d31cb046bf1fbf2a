//! [`DocumentStore`] on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::documents::*;
use super::{SqliteStore, StoreError};

fn tags_from(text: &str) -> Result<Vec<(String, String)>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("document tags: {e}")))
}

fn tags_text(tags: &[(String, String)]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".into())
}

fn version_from(row: &SqliteRow) -> Result<DocumentVersion, StoreError> {
    Ok(DocumentVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        content: row.try_get("content")?,
        document_format: row.try_get("document_format")?,
        document_type: row.try_get("document_type")?,
        created_us: row.try_get("created_us")?,
        sha256: row.try_get("sha256")?,
        tags: tags_from(&row.try_get::<String, _>("tags")?)?,
    })
}

/// The latest version of each document.
const LATEST: &str = "SELECT d.* FROM documents d \
     JOIN (SELECT name, MAX(version) AS version FROM documents GROUP BY name) m \
     ON d.name = m.name AND d.version = m.version";

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn create_document(&self, d: &DocumentVersion) -> Result<bool, StoreError> {
        // Versions are only ever deleted all together, so version 1 exists exactly when the
        // name is taken, and the primary key settles concurrent creates.
        let done = sqlx::query(
            "INSERT OR IGNORE INTO documents (name, version, content, document_format, document_type, \
             created_us, sha256, tags) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.name)
        .bind(&d.content)
        .bind(&d.document_format)
        .bind(&d.document_type)
        .bind(d.created_us)
        .bind(&d.sha256)
        .bind(tags_text(&d.tags))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_document_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<Result<DocumentVersion, VersionRefusal>, StoreError> {
        // IMMEDIATE takes the write lock before reading the latest version, so two updates
        // queue up instead of both claiming the same number.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT * FROM documents WHERE name = ? ORDER BY version DESC LIMIT 1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(Err(VersionRefusal::NotFound)) };
        let latest = version_from(&row)?;
        if new.expected_latest.is_some_and(|v| v != latest.version) {
            return Ok(Err(VersionRefusal::NotLatest { latest: latest.version }));
        }
        if latest.content == new.content {
            return Ok(Err(VersionRefusal::SameContent { latest: latest.version }));
        }
        let added = DocumentVersion {
            name: latest.name,
            version: latest.version + 1,
            content: new.content.clone(),
            document_format: new.document_format.clone(),
            document_type: latest.document_type,
            created_us: new.created_us,
            sha256: new.sha256.clone(),
            tags: latest.tags,
        };
        sqlx::query(
            "INSERT INTO documents (name, version, content, document_format, document_type, created_us, \
             sha256, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&added.name)
        .bind(added.version)
        .bind(&added.content)
        .bind(&added.document_format)
        .bind(&added.document_type)
        .bind(added.created_us)
        .bind(&added.sha256)
        .bind(tags_text(&added.tags))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(added))
    }

    async fn document(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<DocumentVersion>, StoreError> {
        let row = match version {
            Some(v) => {
                sqlx::query("SELECT * FROM documents WHERE name = ? AND version = ?")
                    .bind(name)
                    .bind(v)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM documents WHERE name = ? ORDER BY version DESC LIMIT 1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.as_ref().map(version_from).transpose()
    }

    async fn document_latest_version(&self, name: &str) -> Result<Option<i64>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM documents WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    async fn delete_document(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM documents WHERE name = ?").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn documents(&self) -> Result<Vec<DocumentSummary>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{LATEST} ORDER BY d.name")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let v = version_from(r)?;
                Ok(DocumentSummary {
                    name: v.name,
                    latest_version: v.version,
                    document_format: v.document_format,
                    document_type: v.document_type,
                    created_us: v.created_us,
                    tags: v.tags,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn doc(name: &str, content: &str) -> DocumentVersion {
        DocumentVersion {
            name: name.into(),
            version: 0,
            content: content.into(),
            document_format: "JSON".into(),
            document_type: "Session".into(),
            created_us: 7,
            sha256: format!("h-{content}"),
            tags: vec![("team".into(), "ops".into())],
        }
    }

    fn new(content: &str, expected_latest: Option<i64>) -> NewVersion {
        NewVersion {
            content: content.into(),
            document_format: "JSON".into(),
            created_us: 9,
            sha256: format!("h-{content}"),
            expected_latest,
        }
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn create_versions_get_list_delete() {
        let (dir, s) = store().await;
        assert!(s.create_document(&doc("b-doc", "one")).await.unwrap());
        assert!(!s.create_document(&doc("b-doc", "other")).await.unwrap(), "the name is taken");
        assert!(s.create_document(&doc("a-doc", "x")).await.unwrap());
        assert_eq!(s.document_latest_version("b-doc").await.unwrap(), Some(1));
        assert_eq!(s.document_latest_version("nope").await.unwrap(), None);

        let v2 = s.add_document_version("b-doc", &new("two", Some(1))).await.unwrap().unwrap();
        assert_eq!((v2.version, v2.document_type.as_str(), v2.created_us), (2, "Session", 9));
        assert_eq!(v2.tags, vec![("team".to_owned(), "ops".to_owned())], "tags carry over");
        assert_eq!(
            s.add_document_version("b-doc", &new("three", Some(1))).await.unwrap(),
            Err(VersionRefusal::NotLatest { latest: 2 })
        );
        assert_eq!(
            s.add_document_version("b-doc", &new("two", None)).await.unwrap(),
            Err(VersionRefusal::SameContent { latest: 2 })
        );
        assert_eq!(
            s.add_document_version("nope", &new("x", None)).await.unwrap(),
            Err(VersionRefusal::NotFound)
        );
        assert_eq!(s.add_document_version("b-doc", &new("one", None)).await.unwrap().unwrap().version, 3);

        assert_eq!(s.document("b-doc", None).await.unwrap().unwrap().content, "one");
        assert_eq!(s.document("b-doc", Some(2)).await.unwrap().unwrap().content, "two");
        assert_eq!(s.document("b-doc", Some(1)).await.unwrap().unwrap().version, 1);
        assert!(s.document("b-doc", Some(4)).await.unwrap().is_none());

        let list = s.documents().await.unwrap();
        let names: Vec<(&str, i64)> = list.iter().map(|d| (d.name.as_str(), d.latest_version)).collect();
        assert_eq!(names, [("a-doc", 1), ("b-doc", 3)]);

        assert!(s.delete_document("b-doc").await.unwrap());
        assert!(!s.delete_document("b-doc").await.unwrap());
        assert!(s.document("b-doc", Some(1)).await.unwrap().is_none());
        assert!(s.create_document(&doc("b-doc", "again")).await.unwrap(), "a deleted name is free");
        assert_eq!(s.document("b-doc", None).await.unwrap().unwrap().version, 1);

        // The table survives a reopen (the migration does not run twice).
        drop(s);
        let s = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
        assert_eq!(s.documents().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn concurrent_updates_get_distinct_versions() {
        let (_d, s) = store().await;
        let s = Arc::new(s);
        s.create_document(&doc("d", "v")).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|n| {
                let s = s.clone();
                tokio::spawn(async move { s.add_document_version("d", &new(&format!("c{n}"), None)).await })
            })
            .collect();
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap().unwrap().unwrap().version);
        }
        versions.sort();
        assert_eq!(versions, (2..=21).collect::<Vec<_>>());
    }
}
