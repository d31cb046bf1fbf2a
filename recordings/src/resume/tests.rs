use super::*;
use crate::local::{recording_paths, test_meta};
use crate::EndReason;

fn spool(dir: &Path) -> Spool {
    Spool::open(dir, 1 << 30).unwrap().0
}

fn events(cast: &str, code: &str) -> String {
    cast.lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v[1] == code)
        .map(|v| v[2].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn checkpoints_round_trip_and_a_damaged_slot_is_ignored() {
    let c = Checkpoint {
        seq: 7,
        size: 1234,
        positions: FramePositions { output_next: 9, input_next: 3 },
        started_unix_us: 1_700_000_000_000_000,
        out_carry: vec![0xe2, 0x82],
        in_carry: vec![],
    };
    let b = c.encode();
    assert_eq!(Checkpoint::decode(&b), Some(c.clone()));
    let older = Checkpoint { seq: 6, size: 1000, ..c.clone() };
    let mut two = older.encode().to_vec();
    two.extend_from_slice(&b);
    assert_eq!(Checkpoint::newest(&two), Some(c.clone()));
    // A torn newer slot (one byte flipped): the older one stands.
    two[SLOT + 20] ^= 1;
    assert_eq!(Checkpoint::newest(&two), Some(older));
    assert_eq!(Checkpoint::newest(&[0u8; 2 * SLOT]), None);
}

#[tokio::test]
async fn a_recording_reopens_at_its_checkpoint_and_holds_each_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = spool(dir.path());
    let mut rec = Recorder::create(&s, test_meta("r-1"), &[SinkSpec::Local]).await.unwrap();
    rec.track_frames().await.unwrap();
    assert!(can_reopen(dir.path(), "r-1"));
    rec.output_frames(b"hello ", 1).await.unwrap();
    rec.input_frames(b"ls\r", 1).await.unwrap();
    // A character cut between frames: its first bytes are held back, and checkpointed.
    rec.output_frames(b"caf\xc3", 2).await.unwrap();
    rec.resize(100, 30).await.unwrap();
    // The broker dies (no finish), after writing lines its checkpoint does not cover and a
    // torn line: both are cut, their frames are not claimed.
    drop(rec);
    let part = part_path(dir.path(), "r-1");
    let mut f = std::fs::OpenOptions::new().append(true).open(&part).unwrap();
    std::io::Write::write_all(&mut f, b"[9.0, \"o\", \"unclaimed\"]\n[9.1, \"o\", \"to").unwrap();
    drop(f);

    let s = spool(dir.path());
    let Reopened { mut recorder, positions } =
        Recorder::reopen(&s, "r-1", "SSM-SessionManagerRunShell").await.unwrap();
    assert_eq!(positions, FramePositions { output_next: 2, input_next: 1 });
    assert_eq!(recorder.frame_positions(), Some(positions));
    assert_eq!(recorder.meta().target, "mi-0123456789abcdef0");
    assert_eq!(recorder.meta().document, "SSM-SessionManagerRunShell");
    recorder.output_frames(b"\xa9 done\r\n", 3).await.unwrap();
    recorder.input_frames(b"exit\r", 2).await.unwrap();
    let manifest = recorder.finish(EndReason::Exited, Some(0)).await.unwrap();

    let (cast_path, _) = recording_paths(dir.path(), "r-1");
    let cast = std::fs::read_to_string(&cast_path).unwrap();
    assert_eq!(events(&cast, "o"), "hello café done\r\n");
    assert_eq!(events(&cast, "i"), "ls\rexit\r");
    assert!(!cast.contains("unclaimed"));
    assert_eq!(cast.matches("\"r\"").count(), 1);
    assert_eq!(manifest.size, cast.len() as u64);
    assert_eq!(manifest.sha256, hex::encode(Sha256::digest(cast.as_bytes())));
    assert_eq!(manifest.events as usize, cast.lines().count() - 1);
    // Event times never go back.
    let times: Vec<f64> = cast
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[0].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(!frames_path(dir.path(), "r-1").exists(), "checkpoints go with the finished recording");
}

#[tokio::test]
async fn a_recording_shorter_than_its_checkpoint_is_not_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let s = spool(dir.path());
    let mut rec = Recorder::create(&s, test_meta("r-2"), &[]).await.unwrap();
    rec.track_frames().await.unwrap();
    rec.output_frames(b"some output\r\n", 1).await.unwrap();
    drop(rec);
    let part = part_path(dir.path(), "r-2");
    let len = std::fs::metadata(&part).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&part).unwrap().set_len(len - 5).unwrap();
    let err = Recorder::reopen(&s, "r-2", "").await.err().unwrap();
    assert!(matches!(err, RecordingError::Unrecoverable { .. }), "{err}");
    assert!(matches!(Recorder::reopen(&s, "../r-2", "").await, Err(RecordingError::BadName(_))));
    // Recovery at start-up closes it instead, and drops its checkpoints.
    crate::recover_unfinished(dir.path()).await.unwrap();
    assert!(!frames_path(dir.path(), "r-2").exists());
    assert!(!can_reopen(dir.path(), "r-2"));
}

#[tokio::test]
async fn recovery_leaves_the_recordings_it_is_told_to_keep() {
    let dir = tempfile::tempdir().unwrap();
    let s = spool(dir.path());
    for id in ["keep-1", "close-1"] {
        let mut rec = Recorder::create(&s, test_meta(id), &[]).await.unwrap();
        rec.track_frames().await.unwrap();
        rec.output_frames(b"x", 1).await.unwrap();
    }
    let keep = std::collections::HashSet::from(["keep-1".to_owned()]);
    let done = crate::recover_unfinished_except(dir.path(), &keep).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].meta.session_id, "close-1");
    assert!(can_reopen(dir.path(), "keep-1"));
    assert!(!can_reopen(dir.path(), "close-1"));
}
