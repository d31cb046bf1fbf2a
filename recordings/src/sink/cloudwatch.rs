//! The CloudWatch Logs sink: one log stream per session in the group the session document's
//! preferences name, like SSM's `cloudWatchLogGroupName`.
//!
//! # What goes where
//! - Stream `<session id>`: every line of the spooled asciicast file, the header line too, is
//!   one log event holding the line without its newline, ANSI escapes and all (as asciicast
//!   writes them, JSON-escaped). Read back in order and joined with `"\n"` plus a final
//!   `"\n"`, the stream is the spool file byte for byte. Exceptions, all guards that the
//!   broker's recorder never triggers: empty lines are skipped (CloudWatch refuses empty
//!   messages); a line longer than an event may be (262,118 bytes of message) is split at
//!   UTF-8 character boundaries into consecutive events, which do not rejoin with `"\n"`;
//!   invalid UTF-8 is replaced with U+FFFD; a last line without its newline gains one.
//! - Timestamps: the header's `timestamp` (seconds) for the header, that plus the event's own
//!   time for an event, the previous timestamp for a line that is not an event; clamped so
//!   they never decrease (CloudWatch wants each call's events in time order).
//! - Stream `<session id>.manifest`: the manifest file's bytes as one event, stamped with the
//!   time it is sent, once the recording is finished and all its lines are sent.
//!
//! # How
//! Set-up, once per recording: with `require_encryption` the group must exist with a KMS key,
//! else the delivery is refused (the shipper tries again later); then the stream is created,
//! and the group first when missing (never when encryption is required).
//!
//! Each PutLogEvents call stays within the API limits (10,000 events; 1,048,576 bytes
//! counting 26 bytes an event; a 24 h span), see `cloudwatch_batch`. With
//! `streaming`, lines go out as the recording grows: once new bytes are synced, the sink lets
//! a second's worth gather ([`FLUSH_INTERVAL`], like SSM's 1 s streaming) and sends every
//! complete line; without it, everything goes at the end. The spool is read at most ~1 MiB
//! at a time, so memory stays bounded however long the session.
//!
//! Progress (`<id>.cloudwatch.state.json`) is saved after every successful PutLogEvents.
//! PutLogEvents has no idempotency token, so a call whose outcome is unknown (it timed out,
//! the connection broke, or the broker died before saving) could take effect and then be sent
//! again. The state therefore notes a call as `unconfirmed` before it is made, and nothing
//! but the sink ever sends it again: the SDK client has no retries of its own
//! ([`crate::aws`]), and a call without an answer is not retried in place but returned to
//! the shipper. Before sending again, the sink reads the stream's latest event and skips the
//! events of the batch up to it when they landed (events are unique: every line carries its
//! own microsecond time); when not all had landed, it reads once more [`SETTLE`] later, as
//! the first answer of a service that was stalled may come while it still applies the old
//! call. Only a call that takes effect later still (queued somewhere for longer) can
//! duplicate events; the long read deadline in [`crate::aws`] makes stalls that reach the
//! check rare in the first place.
//!
//! A stream that is gone (PutLogEvents says so, or a check just before the manifest finds
//! it missing: deleted, or the service lost it) took everything sent to it along: the sink
//! creates it again (and the group, unless encryption is required) and sends the whole
//! recording again from the start, at once, so the recording is delivered only once the
//! stream holds all of it. Each such refill is logged and shown as the delivery's `notice`
//! in the shipper's status (`airlock recordings status`).
//!
//! Throttling and 5xx answers are retried in place with jittered backoff a few times, then
//! returned to the shipper, which calls [`Sink::deliver`] again later (within about a second
//! of the service answering again, after an outage); the data stays in the spool meanwhile.
//! Events CloudWatch rejects as too old or too new are logged,
//! counted ([`CloudWatchSink::rejected_events`]) and not sent again.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::{InputLogEvent, RejectedLogEventsInfo};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::cloudwatch_batch::{
    batches, complete_prefix_len, header_base_ms, line_events, split_message, Clock, LogEvent,
};
use super::cloudwatch_errors::{describe, latest_in_batch, remote, transient, unanswered, SERVICE};
use super::{refused, Backoff, CloudWatchTarget, Sink, SinkError, SpoolRecording};
use crate::spool::Progress;

/// How long new lines gather before they are sent while streaming.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Most spool bytes read (and held) at once.
const READ_CHUNK: u64 = 1 << 20;
/// Most bytes read to find the header line when resuming.
const HEADER_READ: u64 = 64 * 1024;
/// The key of this sink's saved state.
const STATE_KEY: &str = "cloudwatch";
/// In-place retries of one throttled or failed call, before the shipper's backoff takes over.
/// Calls without an answer are not retried here: the shipper waits for the service.
const MAX_RETRIES: u32 = 6;
/// How long after a first look the stream is read again to confirm an unknown outcome.
const SETTLE: Duration = Duration::from_millis(500);
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(20);

/// What this sink has done for one recording, saved in the spool.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    /// The log stream exists (and the group passed the encryption check).
    stream_ready: bool,
    /// Spool offset through which lines are sent.
    sent_end: u64,
    /// Timestamp of the last event sent, so resumed events never go back in time.
    last_timestamp_ms: i64,
    manifest_sent: bool,
    /// A PutLogEvents call was made whose outcome is not known: check before sending again.
    #[serde(default)]
    unconfirmed: bool,
    /// How often the stream was found gone and the recording sent again from the start.
    #[serde(default)]
    refills: u32,
    /// The manifest event's timestamp, fixed at its first send so that a resend after an
    /// unknown outcome is recognized by the check.
    #[serde(default)]
    manifest_timestamp_ms: Option<i64>,
}

/// A PutLogEvents failure; `stream_gone` when the stream or group no longer exists,
/// `maybe_applied` when the call may have taken effect (no answer came).
struct PutFailure {
    error: SinkError,
    stream_gone: bool,
    maybe_applied: bool,
}

/// Sends recordings to a CloudWatch Logs group.
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatchlogs::Client,
    target: CloudWatchTarget,
    rejected: AtomicU64,
}

impl CloudWatchSink {
    /// A sink into `target.group` through `client`.
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, target: CloudWatchTarget) -> Self {
        CloudWatchSink { client, target, rejected: AtomicU64::new(0) }
    }

    /// How many events CloudWatch has rejected (too old, expired or too new) so far.
    pub fn rejected_events(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Sends every complete line synced up to `progress` (every byte once finished).
    async fn send_lines(
        &self,
        rec: &SpoolRecording,
        state: &mut State,
        clock: &mut Option<Clock>,
        progress: Progress,
    ) -> Result<(), SinkError> {
        while state.sent_end < progress.synced {
            let start = state.sent_end;
            let end = progress.synced.min(start + READ_CHUNK);
            let bytes = rec.read(start..end).await?;
            let take = match bytes.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                // One line longer than a read: send what is here, split, and go on mid-line.
                None if end < progress.synced => complete_prefix_len(&bytes),
                // A last line without its newline: sent too, never dropped.
                None if progress.finished => bytes.len(),
                // Synced bytes end at a line boundary; should they not, wait for the rest.
                None => return Ok(()),
            };
            if take == 0 {
                return Ok(());
            }
            let chunk = &bytes[..take];
            let clock = match clock {
                Some(c) => c,
                None => clock.insert(self.start_clock(rec, state, start, chunk).await?),
            };
            let events = line_events(chunk, start, clock);
            self.put_all(rec, state, rec.session_id(), &events).await?;
            // Also past trailing empty lines, which have no event.
            state.sent_end = start + take as u64;
        }
        Ok(())
    }

    /// The clock for a delivery: the header's start time, from this chunk when it begins the
    /// file, else from the file's first line; the time now if the header is unreadable.
    async fn start_clock(
        &self,
        rec: &SpoolRecording,
        state: &State,
        start: u64,
        chunk: &[u8],
    ) -> Result<Clock, SinkError> {
        let header = |bytes: &[u8]| {
            let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
            header_base_ms(&String::from_utf8_lossy(first))
        };
        let base = if start == 0 {
            header(chunk)
        } else {
            header(&rec.read(0..rec.progress().synced.min(HEADER_READ)).await?)
        };
        let base = base.unwrap_or_else(now_ms);
        Ok(Clock::new(base, state.last_timestamp_ms))
    }

    /// Sends `events` to `stream` in batches, saving progress after each.
    async fn put_all(
        &self,
        rec: &SpoolRecording,
        state: &mut State,
        stream: &str,
        events: &[LogEvent],
    ) -> Result<(), SinkError> {
        for range in batches(events) {
            let mut batch = &events[range];
            while !batch.is_empty() {
                if state.unconfirmed {
                    let landed = self.confirm(stream, batch).await?;
                    if landed > 0 {
                        tracing::info!(
                            stream,
                            events = landed,
                            "events of an unconfirmed call had landed; not sent again"
                        );
                        Self::advance(rec, state, stream, &batch[landed - 1]);
                        batch = &batch[landed..];
                    }
                }
                if batch.is_empty() {
                    break;
                }
                let was_unconfirmed = std::mem::replace(&mut state.unconfirmed, true);
                rec.save_state(STATE_KEY, state).await?;
                match self.put(rec.session_id(), stream, batch).await {
                    Ok(()) => {
                        if let Some(last) = batch.last() {
                            Self::advance(rec, state, stream, last);
                        }
                        batch = &[];
                    }
                    Err(failure) => {
                        if failure.stream_gone {
                            state.unconfirmed = false;
                            if stream == rec.session_id() {
                                self.stream_vanished(rec, state);
                            }
                        } else if failure.maybe_applied {
                            // Never sent again from here, nor by the SDK: the next attempt
                            // reads the stream first (`confirm`).
                            tracing::warn!(stream, error = %failure.error,
                                "PutLogEvents outcome unknown; the stream is read before sending again");
                        } else {
                            // Refused or answered with an error: it did not take effect.
                            state.unconfirmed = was_unconfirmed;
                        }
                        rec.save_state(STATE_KEY, state).await?;
                        return Err(failure.error);
                    }
                }
            }
            state.unconfirmed = false;
            rec.save_state(STATE_KEY, state).await?;
        }
        Ok(())
    }

    /// Notes `last` as sent. Progress is the recording's lines; the manifest's own flag is set
    /// by its sender.
    fn advance(rec: &SpoolRecording, state: &mut State, stream: &str, last: &LogEvent) {
        if stream == rec.session_id() {
            state.sent_end = last.resume_at;
            state.last_timestamp_ms = last.timestamp_ms;
        }
    }

    /// Notes that the recording's log stream is gone (deleted, or the service lost it): what
    /// was sent is lost with it, so the whole recording is sent again from the start into a
    /// new stream of the same name. Said in the log and in the shipper's status.
    fn stream_vanished(&self, rec: &SpoolRecording, state: &mut State) {
        let lost_end = state.sent_end;
        state.refills += 1;
        state.stream_ready = false;
        state.sent_end = 0;
        state.last_timestamp_ms = 0;
        state.unconfirmed = false;
        let text = format!(
            "log stream {} in group {} vanished (deleted, or the service lost it) after {lost_end} bytes \
             were sent; creating it again and sending the recording from the start (refill {})",
            rec.session_id(),
            self.target.group,
            state.refills
        );
        tracing::warn!(session = %rec.session_id(), group = %self.target.group, lost_end, refills = state.refills, "{text}");
        rec.notice(STATE_KEY, text);
    }

    /// Whether the recording's stream still exists, asked before the manifest is sent (the
    /// manifest goes to its own stream, so a lost recording stream would go unnoticed).
    async fn check_stream(&self, rec: &SpoolRecording, state: &mut State) -> Result<(), SinkError> {
        let out = self
            .retrying("GetLogEvents", transient, || {
                self.client
                    .get_log_events()
                    .log_group_name(&self.target.group)
                    .log_stream_name(rec.session_id())
                    .start_from_head(false)
                    .limit(1)
                    .send()
            })
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                self.stream_vanished(rec, state);
                rec.save_state(STATE_KEY, state).await?;
                Err(remote("GetLogEvents", &e))
            }
            Err(e) => Err(remote("GetLogEvents", &e)),
        }
    }

    /// How many leading events of `batch`, the batch of a call whose outcome is unknown, are
    /// in `stream`. When not all, the stream is read once more [`SETTLE`] later: the first
    /// answer may come from a service that has just resumed and is applying the old call
    /// concurrently.
    async fn confirm(&self, stream: &str, batch: &[LogEvent]) -> Result<usize, SinkError> {
        let first = self.landed(stream, batch).await?;
        if first == batch.len() {
            return Ok(first);
        }
        tokio::time::sleep(SETTLE).await;
        Ok(self.landed(stream, batch).await?.max(first))
    }

    /// How many leading events of `batch` are already in `stream`: the stream's latest event
    /// is looked for in the batch.
    async fn landed(&self, stream: &str, batch: &[LogEvent]) -> Result<usize, SinkError> {
        let out = self
            .retrying("GetLogEvents", transient, || {
                self.client
                    .get_log_events()
                    .log_group_name(&self.target.group)
                    .log_stream_name(stream)
                    .start_from_head(false)
                    .limit(1)
                    .send()
            })
            .await;
        let out = match out {
            Ok(out) => out,
            // No stream (yet): nothing landed.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                return Ok(0)
            }
            Err(e) => return Err(remote("GetLogEvents", &e)),
        };
        let latest = out.events().last().map(|e| (e.timestamp(), e.message()));
        Ok(latest_in_batch(batch, latest))
    }

    /// One PutLogEvents call.
    async fn put(&self, session: &str, stream: &str, batch: &[LogEvent]) -> Result<(), PutFailure> {
        let fail = |error| PutFailure { error, stream_gone: false, maybe_applied: false };
        let input = batch
            .iter()
            .map(|e| InputLogEvent::builder().timestamp(e.timestamp_ms).message(e.message.clone()).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(SinkError::remote(SERVICE, "PutLogEvents", &e)))?;
        let result = self
            // Only calls refused outright are repeated here; one without an answer may have
            // taken effect, and `put_all` checks the stream before sending it again.
            .retrying("PutLogEvents", transient, || {
                self.client
                    .put_log_events()
                    .log_group_name(&self.target.group)
                    .log_stream_name(stream)
                    .set_log_events(Some(input.clone()))
                    .send()
            })
            .await;
        match result {
            Ok(out) => {
                if let Some(info) = out.rejected_log_events_info() {
                    self.note_rejected(session, stream, info, batch.len());
                }
                Ok(())
            }
            Err(e) => {
                let stream_gone = e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception());
                Err(PutFailure {
                    error: remote("PutLogEvents", &e),
                    stream_gone,
                    maybe_applied: unanswered(&e) && !refused(&e),
                })
            }
        }
    }

    /// Logs and counts events CloudWatch refused; they are not retried, as they never fit.
    fn note_rejected(&self, session: &str, stream: &str, info: &RejectedLogEventsInfo, len: usize) {
        let index = |i: Option<i32>| i.map(|i| usize::try_from(i).unwrap_or(0).min(len));
        let (too_old_end, expired_end) =
            (index(info.too_old_log_event_end_index()), index(info.expired_log_event_end_index()));
        let too_new_start = index(info.too_new_log_event_start_index());
        let old = too_old_end.unwrap_or(0).max(expired_end.unwrap_or(0));
        let count = (old + too_new_start.map_or(0, |s| len - s)).min(len);
        if count == 0 {
            return;
        }
        self.rejected.fetch_add(count as u64, Ordering::Relaxed);
        tracing::warn!(
            session = %session,
            group = %self.target.group,
            stream = %stream,
            too_old_end = ?too_old_end,
            expired_end = ?expired_end,
            too_new_start = ?too_new_start,
            rejected = count,
            "CloudWatch Logs rejected events of a recording (too old, expired or too new); they are not sent again"
        );
    }

    /// Refuses a group that is missing or has no KMS key.
    async fn check_encryption(&self) -> Result<(), SinkError> {
        let group = &self.target.group;
        let mut token: Option<String> = None;
        // Bounded: a prefix matching thousands of groups must not keep us here forever.
        for _ in 0..100 {
            let out = self
                .retrying("DescribeLogGroups", transient, || {
                    self.client
                        .describe_log_groups()
                        .log_group_name_prefix(group)
                        .set_next_token(token.clone())
                        .send()
                })
                .await
                .map_err(|e| remote("DescribeLogGroups", &e))?;
            if let Some(found) = out.log_groups().iter().find(|g| g.log_group_name() == Some(group)) {
                return match found.kms_key_id() {
                    Some(key) if !key.is_empty() => Ok(()),
                    _ => Err(SinkError::Refused(format!(
                        "log group {group} is not KMS-encrypted; cloudWatchEncryptionEnabled forbids sending to it"
                    ))),
                };
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Err(SinkError::Refused(format!(
            "log group {group} does not exist; cloudWatchEncryptionEnabled forbids creating an unencrypted one"
        )))
    }

    /// Creates `stream` (and the group when missing, unless it must be encrypted); one that
    /// already exists is fine.
    async fn ensure_stream(&self, stream: &str) -> Result<(), SinkError> {
        let group = &self.target.group;
        let create_stream = || async {
            let r = self
                .retrying("CreateLogStream", transient, || {
                    self.client.create_log_stream().log_group_name(group).log_stream_name(stream).send()
                })
                .await;
            match r {
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        };
        match create_stream().await {
            Ok(()) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                if self.target.require_encryption {
                    return Err(SinkError::Refused(format!(
                        "log group {group} does not exist; cloudWatchEncryptionEnabled forbids creating an unencrypted one"
                    )));
                }
                let r = self
                    .retrying("CreateLogGroup", transient, || {
                        self.client.create_log_group().log_group_name(group).send()
                    })
                    .await;
                match r {
                    Err(e)
                        if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => {
                    }
                    other => other.map(|_| ()).map_err(|e| remote("CreateLogGroup", &e))?,
                }
                create_stream().await.map_err(|e| remote("CreateLogStream", &e))
            }
            Err(e) => Err(remote("CreateLogStream", &e)),
        }
    }

    /// Sends the manifest to `<id>.manifest`.
    async fn send_manifest(&self, rec: &SpoolRecording, state: &mut State) -> Result<(), SinkError> {
        let bytes = match rec.manifest_bytes().await? {
            Some(b) if !b.is_empty() => b,
            _ => return Err(SinkError::Refused("finished recording has no manifest".into())),
        };
        let stream = format!("{}.manifest", rec.session_id());
        self.ensure_stream(&stream).await?;
        // Stamped when sent, not with the recording's times: a recording delivered late may be
        // too old for CloudWatch, and its manifest is what proves what it held.
        let timestamp_ms = *state.manifest_timestamp_ms.get_or_insert_with(now_ms);
        let text = String::from_utf8_lossy(&bytes);
        let events: Vec<_> = split_message(&text)
            .into_iter()
            .map(|piece| LogEvent { timestamp_ms, message: piece.to_owned(), resume_at: state.sent_end })
            .collect();
        self.put_all(rec, state, &stream, &events).await?;
        state.manifest_sent = true;
        rec.save_state(STATE_KEY, state).await
    }

    /// Runs `call`, retrying it in place with jittered backoff while it fails transiently.
    async fn retrying<T, E, F, Fut>(
        &self,
        operation: &'static str,
        retry: fn(&SdkError<E>) -> bool,
        mut call: F,
    ) -> Result<T, SdkError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut retries = 0;
        loop {
            match call().await {
                Err(e) if retries < MAX_RETRIES && retry(&e) => {
                    retries += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        group = %self.target.group,
                        operation,
                        retry = retries,
                        delay_ms = delay.as_millis() as u64,
                        error = %describe(&e),
                        "CloudWatch Logs call failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }
}

#[async_trait]
impl Sink for CloudWatchSink {
    async fn deliver(&self, rec: &SpoolRecording) -> Result<(), SinkError> {
        let mut state: State = rec.load_state(STATE_KEY).await?.unwrap_or_default();
        if !self.target.streaming {
            rec.wait_finished().await;
        }
        let refills = state.refills;
        match self.deliver_from(rec, &mut state).await {
            // The stream vanished during this attempt: fill it again now, not after the
            // shipper's backoff. Once only: a stream that keeps vanishing waits for that.
            Err(_) if state.refills == refills + 1 => self.deliver_from(rec, &mut state).await,
            other => other,
        }
    }
}

impl CloudWatchSink {
    /// One delivery attempt from the saved state.
    async fn deliver_from(&self, rec: &SpoolRecording, state: &mut State) -> Result<(), SinkError> {
        if !state.stream_ready {
            if self.target.require_encryption {
                self.check_encryption().await?;
            }
            self.ensure_stream(rec.session_id()).await?;
            state.stream_ready = true;
            rec.save_state(STATE_KEY, state).await?;
        }
        let mut clock = None;
        loop {
            let progress = rec.progress();
            self.send_lines(rec, state, &mut clock, progress).await?;
            if progress.finished {
                if state.sent_end < progress.synced {
                    let (at, len) = (state.sent_end, progress.synced);
                    let msg = format!("cannot send the recording past byte {at} of {len}");
                    return Err(SinkError::Refused(msg));
                }
                break;
            }
            // Idle until something new is synced, then let a second's worth gather (less when
            // a full read is waiting or the recording ends) and send it in one go.
            rec.wait_beyond(progress.synced.max(state.sent_end), None).await;
            rec.wait_beyond(state.sent_end + READ_CHUNK, Some(Instant::now() + FLUSH_INTERVAL)).await;
        }
        if !state.manifest_sent {
            self.check_stream(rec, state).await?;
            self.send_manifest(rec, state).await?;
        }
        Ok(())
    }
}

/// The time now in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[path = "cloudwatch_tests.rs"]
mod tests;
