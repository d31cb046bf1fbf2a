//! The S3 sink: a recording is durable in S3 within seconds while its session runs, and at
//! the end it is one object, byte-identical to the spool, with its manifest beside it.
//!
//! # Objects
//! - `<prefix>/<id>.cast` (`application/x-asciicast`): the final recording;
//! - `<prefix>/<id>.manifest.json` (`application/json`): the spool's manifest bytes, written
//!   after the final object, so its presence says the recording beside it is complete;
//! - `<prefix>/<id>.cast.live/<offset, 20 digits>`: temporary "live" objects, deleted at the end.
//!
//! # Design
//! S3 objects cannot be appended to, and every part of a multipart upload but the last must
//! be at least 5 MiB, so a quiet session's output cannot go into a part until it ends. Hence:
//! - One multipart upload, created when delivery starts, builds the final object. Every full
//!   [`PART_SIZE`] (5 MiB) of synced bytes is uploaded as the next part as soon as it exists;
//!   at the end the remainder is the last, short part, and the upload is completed. Part `n`
//!   always holds bytes from `(n-1)·PART_SIZE`, so a part is never held back and at most one
//!   part (5 MiB) is ever in memory. S3 allows [`MAX_PARTS`] (10,000) parts: one recording is
//!   bounded at 10,000 × 5 MiB ≈ 48.8 GiB ([`MAX_RECORDING_BYTES`]); beyond it delivery is
//!   refused ([`SinkError::Refused`]).
//! - The bytes not yet in a part are made durable as live objects: at most every
//!   [`LIVE_INTERVAL`] (2 s), when synced bytes exist beyond what the parts and the earlier
//!   live objects cover, one object holding exactly those bytes is PUT, named after its start
//!   offset. Every byte is thus in S3 within `LIVE_INTERVAL` plus one PUT of being synced
//!   (while a part upload runs, the next live PUT waits for it), and the live objects in name
//!   order, with the gaps between them filled by the parts, are a prefix of the recording.
//!   Each live object holds only new bytes, so a quiet session costs ~2× its size in uploads
//!   and a busy one (whose bytes go straight into parts) ~1×.
//! - Once the upload is completed and the manifest stored, the live objects are deleted.
//!
//! Every step is saved ([`S3State`], in the spool) before the next, so a failed or killed
//! delivery resumes where it was. Re-uploading a part whose state was not saved replaces it
//! (same number, same bytes); a live object re-PUT after a crash has the same name and a
//! longer body. If the upload is gone (`NoSuchUpload`), a fresh one starts from offset 0.
//! Uploads abandoned that way (or by a request that timed out yet reached S3) stay
//! incomplete: the bucket should have an `AbortIncompleteMultipartUpload` lifecycle rule.
//! The SDK's default per-request CRC32 checksum guards every body in transit.

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use tokio::time::Instant;

use super::s3_plan::{plan, Step};
pub use super::s3_plan::{ObjectKeys, S3State, LIVE_INTERVAL, MAX_PARTS, MAX_RECORDING_BYTES, PART_SIZE};
use super::{chain, no_answer, S3Encryption, S3Target, Sink, SinkError, SpoolRecording};

/// The name of this sink's state in the spool.
const STATE: &str = "s3";
/// The content type of the final and the live objects.
const CAST_TYPE: &str = "application/x-asciicast";
/// The content type of the manifest.
const MANIFEST_TYPE: &str = "application/json";
/// Keys per DeleteObjects call (S3's maximum).
const DELETE_BATCH: usize = 1000;

/// Delivers recordings into an S3 bucket (see the module documentation).
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    target: S3Target,
}

impl S3Sink {
    /// A sink writing to `target` with `client`.
    pub fn new(client: aws_sdk_s3::Client, target: S3Target) -> Self {
        S3Sink { client, target }
    }

    /// The `x-amz-server-side-encryption` value and KMS key for every object written.
    fn encryption(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.target.encryption {
            S3Encryption::BucketDefault => (None, None),
            S3Encryption::S3Managed => (Some(ServerSideEncryption::Aes256), None),
            S3Encryption::Kms { key_id } => (Some(ServerSideEncryption::AwsKms), Some(key_id.clone())),
        }
    }

    /// An SDK error as a sink error naming the object: for an error S3 answered, its code
    /// (e.g. NoSuchBucket), HTTP status and message; otherwise (timeouts, connection
    /// failures) the SDK's error chain. The SDK's debug dump of the raw response is left out.
    fn remote<E>(&self, operation: &'static str, key: &str, err: &SdkError<E>) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let service = err.as_service_error();
        let what = match (status, service.and_then(|e| e.code()), service.and_then(|e| e.message())) {
            (Some(status), Some(code), Some(message)) => format!("{code} (HTTP {status}): {message}"),
            (Some(status), Some(code), None) => format!("{code} (HTTP {status})"),
            (Some(status), None, _) => format!("HTTP {status}: {}", chain(err)),
            (None, _, _) => chain(err),
        };
        if no_answer(err) {
            let bucket = &self.target.bucket;
            let message = format!("s3://{bucket}/{key}: {what}");
            return SinkError::Unanswered { service: "s3", operation, message };
        }
        self.error(operation, key, &what)
    }

    /// A failed call on `key`.
    fn error(&self, operation: &'static str, key: &str, what: &str) -> SinkError {
        let bucket = &self.target.bucket;
        SinkError::Remote { service: "s3", operation, message: format!("s3://{bucket}/{key}: {what}") }
    }

    async fn create(&self, keys: &ObjectKeys) -> Result<String, SinkError> {
        let (sse, kms_key) = self.encryption();
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&keys.cast)
            .content_type(CAST_TYPE)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .send()
            .await
            .map_err(|e| self.remote("CreateMultipartUpload", &keys.cast, &e))?;
        out.upload_id
            .ok_or_else(|| self.error("CreateMultipartUpload", &keys.cast, "the reply has no upload id"))
    }

    /// Uploads one part; `Ok(None)` when the upload no longer exists.
    async fn upload_part(
        &self,
        keys: &ObjectKeys,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<Option<String>, SinkError> {
        let result = self
            .client
            .upload_part()
            .bucket(&self.target.bucket)
            .key(&keys.cast)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(out) => match out.e_tag {
                Some(etag) => Ok(Some(etag)),
                None => Err(self.error("UploadPart", &keys.cast, "the reply has no ETag")),
            },
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(None),
            Err(e) if e.as_service_error().is_some() && self.upload_is_gone(keys, upload_id).await => {
                Ok(None)
            }
            Err(e) => Err(self.remote("UploadPart", &keys.cast, &e)),
        }
    }

    async fn put_live(&self, keys: &ObjectKeys, start: u64, body: Vec<u8>) -> Result<(), SinkError> {
        let key = keys.live(start);
        self.put(&key, CAST_TYPE, body).await
    }

    async fn put(&self, key: &str, content_type: &str, body: Vec<u8>) -> Result<(), SinkError> {
        let (sse, kms_key) = self.encryption();
        self.client
            .put_object()
            .bucket(&self.target.bucket)
            .key(key)
            .content_type(content_type)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.remote("PutObject", key, &e))?;
        Ok(())
    }

    /// Completes the upload; `Ok(false)` when the upload no longer exists and the final
    /// object is not already there.
    async fn complete(&self, keys: &ObjectKeys, state: &S3State, len: u64) -> Result<bool, SinkError> {
        let Some(upload_id) = &state.upload_id else { return Ok(false) };
        let parts = state
            .parts
            .iter()
            .map(|(number, etag)| CompletedPart::builder().part_number(*number).e_tag(etag).build())
            .collect();
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&keys.cast)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("NoSuchUpload") => self.final_object_is_there(keys, len).await,
            Err(e) if e.as_service_error().is_some() && self.upload_is_gone(keys, upload_id).await => {
                self.final_object_is_there(keys, len).await
            }
            Err(e) => Err(self.remote("CompleteMultipartUpload", &keys.cast, &e)),
        }
    }

    /// Whether the upload is certainly gone, asked after S3 refused a call on it with an error
    /// other than NoSuchUpload: some S3-compatible stores (moto among them) answer a call on
    /// a vanished upload with a 500. When the listing fails too, the answer is "not known to
    /// be gone" and the original error stands.
    async fn upload_is_gone(&self, keys: &ObjectKeys, upload_id: &str) -> bool {
        let (mut key_marker, mut id_marker) = (None, None);
        // Bounded, in case a store keeps answering "truncated" without moving on.
        for _ in 0..100 {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.target.bucket)
                .prefix(&keys.cast)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await;
            let Ok(page) = page else { return false };
            if page.uploads().iter().any(|u| u.upload_id() == Some(upload_id)) {
                return false;
            }
            match (page.is_truncated(), page.next_key_marker(), page.next_upload_id_marker()) {
                (Some(true), Some(k), Some(u)) => {
                    (key_marker, id_marker) = (Some(k.to_owned()), Some(u.to_owned()))
                }
                _ => return true,
            }
        }
        false
    }

    /// Whether an earlier attempt completed the upload but died before saving that: the
    /// object is always the parts 1..n in order, i.e. the recording from offset 0, so one
    /// with the recording's final length is the whole recording.
    async fn final_object_is_there(&self, keys: &ObjectKeys, len: u64) -> Result<bool, SinkError> {
        let result = self.client.head_object().bucket(&self.target.bucket).key(&keys.cast).send().await;
        match result {
            Ok(head) => Ok(head.content_length.and_then(|l| u64::try_from(l).ok()) == Some(len)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(self.remote("HeadObject", &keys.cast, &e)),
        }
    }

    /// Deletes every live object of the recording, page by page.
    async fn delete_live(&self, keys: &ObjectKeys) -> Result<(), SinkError> {
        let bucket = &self.target.bucket;
        let mut pages =
            self.client.list_objects_v2().bucket(bucket).prefix(&keys.live_prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.remote("ListObjectsV2", &keys.live_prefix, &e))?;
            let batch: Vec<String> =
                page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
            // A page holds at most 1000 keys; deleting them before asking for the next page
            // is safe, as the continuation token points after the last key listed.
            for chunk in batch.chunks(DELETE_BATCH) {
                self.delete_objects(keys, chunk.to_vec()).await?;
            }
        }
        Ok(())
    }

    async fn delete_objects(&self, keys: &ObjectKeys, batch: Vec<String>) -> Result<(), SinkError> {
        let op = "DeleteObjects";
        let objects = batch
            .into_iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .and_then(|objects| Delete::builder().set_objects(Some(objects)).quiet(true).build())
            .map_err(|e| self.error(op, &keys.live_prefix, &e.to_string()))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.target.bucket)
            .delete(objects)
            .send()
            .await
            .map_err(|e| self.remote(op, &keys.live_prefix, &e))?;
        // DeleteObjects answers 200 even when single keys failed; those are in the body.
        if let Some(failed) = out.errors().first() {
            let what =
                format!("{} {}", failed.code().unwrap_or_default(), failed.message().unwrap_or_default());
            return Err(self.error(op, failed.key().unwrap_or_default(), &what));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn deliver(&self, rec: &SpoolRecording) -> Result<(), SinkError> {
        let keys = ObjectKeys::new(&self.target.key_prefix, rec.session_id());
        let mut state: S3State = rec.load_state(STATE).await?.unwrap_or_default();
        // The first live object of an attempt may go at once; the time of the last one of an
        // earlier attempt does not matter, as that attempt is over.
        let mut live_not_before = Instant::now();
        // An upload that vanishes once is restarted; twice in one attempt means something is
        // deleting it, and the shipper's backoff is better than a tight loop.
        let mut restarted = false;
        loop {
            let progress = rec.progress();
            match plan(&state, progress, Instant::now(), live_not_before) {
                Step::Create => {
                    state.upload_id = Some(self.create(&keys).await?);
                }
                Step::Part { number, range } => {
                    let Some(upload_id) = state.upload_id.clone() else {
                        return Err(SinkError::Refused("internal: a part planned without an upload".into()));
                    };
                    let body = rec.read(range.clone()).await?;
                    match self.upload_part(&keys, &upload_id, number, body).await? {
                        Some(etag) => {
                            state.parts.retain(|(n, _)| *n != number);
                            state.parts.push((number, etag));
                            state.parts_end = range.end;
                        }
                        None => restart(&mut state, &mut restarted, &keys, "UploadPart")?,
                    }
                }
                Step::Live { range } => {
                    live_not_before = Instant::now() + LIVE_INTERVAL;
                    let body = rec.read(range.clone()).await?;
                    self.put_live(&keys, range.start, body).await?;
                    state.live_end = range.end;
                }
                Step::Complete => {
                    if self.complete(&keys, &state, progress.synced).await? {
                        state.completed = true;
                        state.upload_id = None;
                    } else {
                        restart(&mut state, &mut restarted, &keys, "CompleteMultipartUpload")?;
                    }
                }
                Step::StoreManifest => {
                    let Some(manifest) = rec.manifest_bytes().await? else {
                        return Err(SinkError::Refused("finished recording has no manifest".into()));
                    };
                    self.put(&keys.manifest, MANIFEST_TYPE, manifest).await?;
                    state.manifest_stored = true;
                }
                Step::DeleteLive => return self.delete_live(&keys).await,
                Step::Wait { seen, until } => {
                    rec.wait_beyond(seen, until).await;
                    continue;
                }
                Step::TooLarge => {
                    return Err(SinkError::Refused(format!(
                        "recording {} is larger than S3 allows for one object built from {MAX_PARTS} parts of \
                         {} MiB ({:.1} GiB); s3://{}/{} was not completed",
                        rec.session_id(),
                        PART_SIZE >> 20,
                        MAX_RECORDING_BYTES as f64 / f64::from(1u32 << 30),
                        self.target.bucket,
                        keys.cast
                    )));
                }
                Step::AheadOfSpool => {
                    return Err(SinkError::Refused(format!(
                        "the S3 state of recording {} covers {} bytes but the spool has only {}",
                        rec.session_id(),
                        state.parts_end.max(state.live_end),
                        progress.synced
                    )));
                }
            }
            rec.save_state(STATE, &state).await?;
        }
    }
}

/// Starts over with a fresh upload from offset 0 after the old one disappeared.
fn restart(
    state: &mut S3State,
    restarted: &mut bool,
    keys: &ObjectKeys,
    op: &'static str,
) -> Result<(), SinkError> {
    if std::mem::replace(restarted, true) {
        let message = format!("{}: the multipart upload vanished again after a restart", keys.cast);
        return Err(SinkError::Remote { service: "s3", operation: op, message });
    }
    tracing::warn!(key = %keys.cast, "S3 multipart upload is gone (NoSuchUpload); starting a fresh one from offset 0");
    state.restart_upload();
    Ok(())
}
