//! The S3 sink's object names, saved progress and the pure decision of what to do next;
//! the sink itself ([`super::s3`]) only carries the decisions out against S3.

use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::spool::Progress;

/// Size of every part of the final object but the last: S3's minimum part size (5 MiB), so
/// each part is uploaded the moment it exists and at most one is ever held in memory.
pub const PART_SIZE: u64 = 5 * 1024 * 1024;

/// S3's limit on parts in one multipart upload.
pub const MAX_PARTS: usize = 10_000;

/// The largest recording the sink accepts: `MAX_PARTS` × `PART_SIZE` = 50,000 MiB ≈ 48.8 GiB.
pub const MAX_RECORDING_BYTES: u64 = MAX_PARTS as u64 * PART_SIZE;

/// How often, at most, the bytes not yet in a part are written as a live object.
pub const LIVE_INTERVAL: Duration = Duration::from_secs(2);

/// The names of one recording's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKeys {
    /// The final asciicast object, `<prefix>/<id>.cast`.
    pub cast: String,
    /// The manifest, `<prefix>/<id>.manifest.json`.
    pub manifest: String,
    /// The folder of live objects, `<prefix>/<id>.cast.live/`.
    pub live_prefix: String,
}

impl ObjectKeys {
    /// The keys for `session_id` under `key_prefix` (slashes at its ends do not matter).
    pub fn new(key_prefix: &str, session_id: &str) -> Self {
        let prefix = key_prefix.trim_matches('/');
        let base = if prefix.is_empty() { session_id.to_owned() } else { format!("{prefix}/{session_id}") };
        ObjectKeys {
            cast: format!("{base}.cast"),
            manifest: format!("{base}.manifest.json"),
            live_prefix: format!("{base}.cast.live/"),
        }
    }

    /// The live object starting at byte `start`: zero-padded so that name order is offset order.
    pub fn live(&self, start: u64) -> String {
        format!("{}{start:020}", self.live_prefix)
    }
}

/// What the S3 sink has done for one recording, saved in the spool after every step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3State {
    /// The multipart upload building the final object, once created.
    pub upload_id: Option<String>,
    /// Uploaded parts in order: (part number, ETag); part n holds bytes from (n-1)·PART_SIZE.
    pub parts: Vec<(i32, String)>,
    /// Bytes of the recording in the parts.
    pub parts_end: u64,
    /// Where the last live object ends (0 before the first).
    pub live_end: u64,
    /// The final object exists.
    pub completed: bool,
    /// The manifest object exists.
    pub manifest_stored: bool,
}

impl S3State {
    /// Forgets the multipart upload (it is gone from the bucket) so a fresh one starts at 0;
    /// live objects are kept, as they are still the durable copy of the tail.
    pub fn restart_upload(&mut self) {
        self.upload_id = None;
        self.parts.clear();
        self.parts_end = 0;
    }
}

/// The next thing the sink does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// CreateMultipartUpload.
    Create,
    /// UploadPart `number` with these bytes.
    Part { number: i32, range: Range<u64> },
    /// PutObject a live object with these bytes, named after `range.start`.
    Live { range: Range<u64> },
    /// CompleteMultipartUpload with all parts.
    Complete,
    /// PutObject the manifest.
    StoreManifest,
    /// Delete the live objects; then the delivery is done.
    DeleteLive,
    /// Nothing to do until more than `seen` bytes are synced (or the recording finishes), or
    /// until `until`, when a live object becomes due.
    Wait { seen: u64, until: Option<Instant> },
    /// The recording needs more than `MAX_PARTS` parts.
    TooLarge,
    /// The saved state claims bytes the spool does not have.
    AheadOfSpool,
}

/// Decides the next step from the saved state, the recording's progress, the time and the
/// earliest time the next live object may be written.
pub(super) fn plan(state: &S3State, progress: Progress, now: Instant, live_not_before: Instant) -> Step {
    let synced = progress.synced;
    if state.parts_end > synced || state.live_end > synced {
        return Step::AheadOfSpool;
    }
    if state.completed {
        return if state.manifest_stored { Step::DeleteLive } else { Step::StoreManifest };
    }
    if state.upload_id.is_none() {
        return Step::Create;
    }
    let next_number = state.parts.len() + 1;
    let pending = synced - state.parts_end;
    // A full part goes first whether or not the recording is finished: it is the cheapest way
    // to make those bytes durable, and a live object then never exceeds a part.
    let last_part = progress.finished && (pending > 0 || state.parts.is_empty());
    if pending >= PART_SIZE || last_part {
        if next_number > MAX_PARTS {
            return Step::TooLarge;
        }
        let end = state.parts_end + pending.min(PART_SIZE);
        return Step::Part { number: next_number as i32, range: state.parts_end..end };
    }
    if progress.finished {
        return Step::Complete;
    }
    // Live objects start where both the parts and the earlier live objects end: the parts
    // already hold what lies before, so no byte is sent twice as live data.
    let covered = state.parts_end.max(state.live_end);
    if synced <= covered {
        return Step::Wait { seen: synced, until: None };
    }
    if now >= live_not_before {
        Step::Live { range: covered..synced }
    } else {
        Step::Wait { seen: synced, until: Some(live_not_before) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = PART_SIZE;

    fn progress(synced: u64, finished: bool) -> Progress {
        Progress { synced, finished }
    }

    fn uploading(parts: usize, live_end: u64) -> S3State {
        S3State {
            upload_id: Some("u".into()),
            parts: (1..=parts as i32).map(|n| (n, format!("e{n}"))).collect(),
            parts_end: parts as u64 * P,
            live_end,
            ..S3State::default()
        }
    }

    #[test]
    fn keys_join_the_prefix_with_one_slash() {
        for prefix in ["rec", "/rec/", "rec//", "//rec"] {
            let keys = ObjectKeys::new(prefix, "s-1");
            assert_eq!(keys.cast, "rec/s-1.cast");
            assert_eq!(keys.manifest, "rec/s-1.manifest.json");
            assert_eq!(keys.live_prefix, "rec/s-1.cast.live/");
        }
        let nested = ObjectKeys::new("/a/b/", "s");
        assert_eq!(nested.cast, "a/b/s.cast");
        for prefix in ["", "/", "//"] {
            let keys = ObjectKeys::new(prefix, "s");
            assert_eq!(keys.cast, "s.cast");
            assert_eq!(keys.manifest, "s.manifest.json");
        }
        let keys = ObjectKeys::new("p", "s");
        assert_eq!(keys.live(0), "p/s.cast.live/00000000000000000000");
        assert_eq!(keys.live(5_242_880), "p/s.cast.live/00000000000005242880");
        assert!(keys.live(99) < keys.live(100), "name order is offset order");
    }

    #[test]
    fn the_limit_is_about_48_8_gib() {
        let gib = MAX_RECORDING_BYTES as f64 / (1u64 << 30) as f64;
        assert!((48.8..48.9).contains(&gib), "{gib}");
    }

    #[test]
    fn the_upload_is_created_first() {
        let now = Instant::now();
        assert_eq!(plan(&S3State::default(), progress(0, false), now, now), Step::Create);
        assert_eq!(plan(&S3State::default(), progress(10, true), now, now), Step::Create);
    }

    #[test]
    fn small_tails_become_live_objects_at_most_every_interval() {
        let now = Instant::now();
        let later = now + LIVE_INTERVAL;
        let state = uploading(0, 0);
        assert_eq!(plan(&state, progress(0, false), now, now), Step::Wait { seen: 0, until: None });
        assert_eq!(plan(&state, progress(100, false), now, now), Step::Live { range: 0..100 });
        assert_eq!(
            plan(&state, progress(100, false), now, later),
            Step::Wait { seen: 100, until: Some(later) }
        );
        let state = uploading(0, 100);
        assert_eq!(plan(&state, progress(100, false), later, later), Step::Wait { seen: 100, until: None });
        assert_eq!(plan(&state, progress(250, false), later, later), Step::Live { range: 100..250 });
    }

    #[test]
    fn full_parts_go_as_soon_as_they_exist_and_live_objects_follow_them() {
        let now = Instant::now();
        let not_yet = now + LIVE_INTERVAL;
        let state = uploading(0, 3 * P / 2);
        assert_eq!(plan(&state, progress(P - 1, false), now, not_yet), Step::AheadOfSpool);
        assert_eq!(
            plan(&state, progress(2 * P + 7, false), now, not_yet),
            Step::Part { number: 1, range: 0..P }
        );
        let state = uploading(2, 3 * P / 2);
        assert_eq!(
            plan(&state, progress(2 * P + 7, false), now, now),
            Step::Live { range: 2 * P..2 * P + 7 }
        );
        let state = uploading(1, 0);
        assert_eq!(plan(&state, progress(P + 9, false), now, now), Step::Live { range: P..P + 9 });
    }

    #[test]
    fn a_finished_recording_ends_with_a_short_last_part_and_completes() {
        let now = Instant::now();
        let later = now + LIVE_INTERVAL;
        let total = 2 * P + 123;
        let mut state = uploading(0, 40);
        assert_eq!(plan(&state, progress(total, true), now, later), Step::Part { number: 1, range: 0..P });
        state = uploading(2, 40);
        assert_eq!(
            plan(&state, progress(total, true), now, later),
            Step::Part { number: 3, range: 2 * P..total }
        );
        state.parts.push((3, "e3".into()));
        state.parts_end = total;
        assert_eq!(plan(&state, progress(total, true), now, later), Step::Complete);
        // Exactly whole parts: nothing is left for a last part.
        assert_eq!(plan(&uploading(2, 0), progress(2 * P, true), now, later), Step::Complete);
        // An empty recording still needs one (empty) part.
        assert_eq!(
            plan(&uploading(0, 0), progress(0, true), now, later),
            Step::Part { number: 1, range: 0..0 }
        );
    }

    #[test]
    fn after_completion_the_manifest_then_the_cleanup() {
        let now = Instant::now();
        let mut state = S3State { completed: true, parts_end: 10, live_end: 10, ..S3State::default() };
        assert_eq!(plan(&state, progress(10, true), now, now), Step::StoreManifest);
        state.manifest_stored = true;
        assert_eq!(plan(&state, progress(10, true), now, now), Step::DeleteLive);
    }

    #[test]
    fn more_than_ten_thousand_parts_are_refused() {
        let now = Instant::now();
        let state = uploading(MAX_PARTS, 0);
        assert_eq!(plan(&state, progress(MAX_RECORDING_BYTES, true), now, now), Step::Complete);
        assert_eq!(plan(&state, progress(MAX_RECORDING_BYTES + 1, true), now, now), Step::TooLarge);
        assert_eq!(plan(&state, progress(MAX_RECORDING_BYTES + P, false), now, now), Step::TooLarge);
        let state = uploading(MAX_PARTS - 1, 0);
        assert_eq!(
            plan(&state, progress(MAX_RECORDING_BYTES, false), now, now),
            Step::Part { number: MAX_PARTS as i32, range: MAX_RECORDING_BYTES - P..MAX_RECORDING_BYTES }
        );
    }

    #[test]
    fn a_restarted_upload_begins_at_zero_and_keeps_the_live_objects() {
        let now = Instant::now();
        let mut state = uploading(3, 3 * P + 50);
        state.restart_upload();
        assert_eq!(state.parts_end, 0);
        assert!(state.parts.is_empty());
        assert_eq!(state.live_end, 3 * P + 50);
        assert_eq!(plan(&state, progress(3 * P + 80, false), now, now), Step::Create);
        state.upload_id = Some("v".into());
        assert_eq!(
            plan(&state, progress(3 * P + 80, false), now, now),
            Step::Part { number: 1, range: 0..P }
        );
    }

    #[test]
    fn state_round_trips_as_json() {
        let state = uploading(2, 7);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<S3State>(&json).unwrap(), state);
    }
}
