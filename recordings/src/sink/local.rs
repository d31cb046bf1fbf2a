//! The local-folder sink: the broker's own archive, which `airlock recordings` reads.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{write_durably, Sink, SinkError, SpoolRecording};
use crate::local::recording_paths;

/// Copies each finished recording and its manifest into a folder.
pub struct LocalSink {
    dir: PathBuf,
}

impl LocalSink {
    /// A sink into `dir` (created when needed).
    pub fn new(dir: PathBuf) -> Self {
        LocalSink { dir }
    }
}

#[async_trait]
impl Sink for LocalSink {
    async fn deliver(&self, rec: &SpoolRecording) -> Result<(), SinkError> {
        rec.wait_finished().await;
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| SinkError::Spool { path, source }
        };
        tokio::fs::create_dir_all(&self.dir).await.map_err(io(&self.dir))?;
        let (cast, manifest) = recording_paths(&self.dir, rec.session_id());
        rec.copy_to(&cast).await?;
        // The manifest last: its presence says the recording beside it is complete.
        let Some(manifest_bytes) = rec.manifest_bytes().await? else {
            return Err(SinkError::Refused("finished recording has no manifest".into()));
        };
        write_durably(&manifest, manifest_bytes).await.map_err(io(&manifest))?;
        if let Ok(d) = tokio::fs::File::open(&self.dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
}
