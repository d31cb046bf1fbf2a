//! Fetching a recording from the broker in chunks (`AirlockRecordings.GetRecording`), and
//! `recordings export`, which checks the bytes against the manifest's SHA-256.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::{ApiError, Client};
use crate::error::Error;

/// The `X-Amz-Target` prefix of the recordings API.
pub const TARGET_PREFIX: &str = "AirlockRecordings.";
/// Bytes asked for per call (the broker's cap).
pub const CHUNK: u64 = 1 << 20;

/// The full target of recordings operation `op`.
pub fn target(op: &str) -> String {
    format!("{TARGET_PREFIX}{op}")
}

/// Decodes `Data` as the broker sends it: standard base64 with padding.
fn decode_data(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// A SHA-256 digest in lowercase hex, as manifests write it.
fn hex_digest(hash: Sha256) -> String {
    format!("{:x}", hash.finalize())
}

/// Reads one recording chunk by chunk, hashing what it hands out.
pub struct Fetcher<'a> {
    client: &'a Client,
    session_id: String,
    offset: u64,
    total: Option<u64>,
    sha256: Option<String>,
    hash: Sha256,
}

fn bad_response(detail: String) -> Error {
    Error::Api(ApiError::response("GetRecording", Some(200), detail))
}

impl<'a> Fetcher<'a> {
    /// A fetcher of `session_id`'s recording from the start.
    pub fn new(client: &'a Client, session_id: &str) -> Self {
        Fetcher {
            client,
            session_id: session_id.to_owned(),
            offset: 0,
            total: None,
            sha256: None,
            hash: Sha256::new(),
        }
    }

    /// The next chunk, or `None` once the whole recording was read.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.total.is_some_and(|t| self.offset >= t) {
            return Ok(None);
        }
        let body = json!({ "SessionId": self.session_id, "Offset": self.offset, "Length": CHUNK });
        let v = self.client.call_target(&target("GetRecording"), &body).await?;
        let total = v["TotalSize"].as_u64().ok_or_else(|| bad_response("no TotalSize".into()))?;
        let data = v["Data"]
            .as_str()
            .and_then(decode_data)
            .ok_or_else(|| bad_response("Data is missing or not base64".into()))?;
        if v["Offset"].as_u64() != Some(self.offset) {
            return Err(bad_response(format!("asked for offset {}, got {}", self.offset, v["Offset"])));
        }
        if self.total.is_some_and(|t| t != total) {
            return Err(bad_response("the recording changed size while being read".into()));
        }
        let end = self.offset + data.len() as u64;
        if end > total || (data.is_empty() && self.offset < total) {
            return Err(bad_response(format!("{} bytes at offset {} of {total}", data.len(), self.offset)));
        }
        if let Some(sha) = v["Sha256"].as_str() {
            if self.sha256.as_deref().is_some_and(|s| s != sha) {
                return Err(bad_response("the recording's SHA-256 changed while being read".into()));
            }
            self.sha256 = Some(sha.to_owned());
        }
        self.total = Some(total);
        self.offset = end;
        self.hash.update(&data);
        Ok(if data.is_empty() { None } else { Some(data) })
    }

    /// Checks what was read against the manifest's SHA-256 (call after the last chunk).
    pub fn verify(self) -> anyhow::Result<String> {
        let Some(expected) = self.sha256 else {
            bail!("the broker gave no SHA-256 for {} (its manifest is missing)", self.session_id);
        };
        let got = hex_digest(self.hash);
        if !got.eq_ignore_ascii_case(&expected) {
            bail!(
                "SHA-256 MISMATCH for {}: the manifest says {expected}, the {} bytes received hash to {got}",
                self.session_id,
                self.offset
            );
        }
        Ok(got)
    }
}

/// The file an export writes when no `-o` is given.
pub fn default_export_path(session_id: &str) -> PathBuf {
    PathBuf::from(format!("{session_id}.cast"))
}

/// Writes the recording's exact bytes to `path` once they match the manifest's SHA-256;
/// returns the size and digest. Nothing is left at `path` when they do not.
pub async fn export(client: &Client, session_id: &str, path: &Path) -> anyhow::Result<(u64, String)> {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    let part = path.with_file_name(name);
    let mut file =
        tokio::fs::File::create(&part).await.with_context(|| format!("cannot create {}", part.display()))?;
    let mut fetcher = Fetcher::new(client, session_id);
    let written = async {
        let mut size = 0u64;
        while let Some(chunk) = fetcher.next().await? {
            file.write_all(&chunk).await.with_context(|| format!("cannot write {}", part.display()))?;
            size += chunk.len() as u64;
        }
        file.sync_all().await.with_context(|| format!("cannot write {}", part.display()))?;
        let digest = fetcher.verify()?;
        Ok::<_, anyhow::Error>((size, digest))
    }
    .await;
    drop(file);
    match written {
        Ok(done) => {
            tokio::fs::rename(&part, path)
                .await
                .with_context(|| format!("cannot rename {} to {}", part.display(), path.display()))?;
            Ok(done)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
