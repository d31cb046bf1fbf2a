//! Persistent SSM documents (Session documents: the Session Manager preferences live in
//! `SSM-SessionManagerRunShell`). Every update adds a version; versions are never edited.

use async_trait::async_trait;

use super::StoreError;

/// One version of a document as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentVersion {
    /// The document's name.
    pub name: String,
    /// 1 for the first version, then one more for each update.
    pub version: i64,
    /// The document's JSON.
    pub content: String,
    /// `JSON` (the only format accepted).
    pub document_format: String,
    /// `Session` (the only type accepted).
    pub document_type: String,
    /// When the version was written, Unix time in microseconds.
    pub created_us: i64,
    /// SHA-256 of `content`, lower-case hex.
    pub sha256: String,
    /// The document's tags (set at creation, carried to every version).
    pub tags: Vec<(String, String)>,
}

/// A document in a listing: its name and latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentSummary {
    /// The document's name.
    pub name: String,
    /// The number of its latest version.
    pub latest_version: i64,
    /// The latest version's format.
    pub document_format: String,
    /// The document's type.
    pub document_type: String,
    /// When the latest version was written.
    pub created_us: i64,
    /// The document's tags.
    pub tags: Vec<(String, String)>,
}

/// What a new version carries; the store assigns the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    /// The document's JSON.
    pub content: String,
    /// Its format.
    pub document_format: String,
    /// When it is written, Unix time in microseconds.
    pub created_us: i64,
    /// SHA-256 of `content`, lower-case hex.
    pub sha256: String,
    /// The version the caller believes is the latest; `None` for whatever is latest.
    pub expected_latest: Option<i64>,
}

/// Why a version could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRefusal {
    /// No document of that name.
    NotFound,
    /// The caller named a version that is not the latest.
    NotLatest {
        /// The latest version.
        latest: i64,
    },
    /// The content is the latest version's content.
    SameContent {
        /// The latest version.
        latest: i64,
    },
}

/// Document half of the store.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Creates a document as version 1 of `doc` (whose `version` is ignored); false if the
    /// name is taken.
    async fn create_document(&self, doc: &DocumentVersion) -> Result<bool, StoreError>;
    /// Adds version latest + 1, atomically with the checks of [`VersionRefusal`]; the type and
    /// tags are the latest version's.
    async fn add_document_version(
        &self,
        name: &str,
        new: &NewVersion,
    ) -> Result<Result<DocumentVersion, VersionRefusal>, StoreError>;
    /// One version of a document (`None`: the latest).
    async fn document(&self, name: &str, version: Option<i64>)
        -> Result<Option<DocumentVersion>, StoreError>;
    /// The latest version number of a document.
    async fn document_latest_version(&self, name: &str) -> Result<Option<i64>, StoreError>;
    /// Deletes every version of a document; false if it did not exist.
    async fn delete_document(&self, name: &str) -> Result<bool, StoreError>;
    /// Every document with its latest version, by name.
    async fn documents(&self) -> Result<Vec<DocumentSummary>, StoreError>;
}
