//! Tests of `recordings`: line matching, the file scan, listing and chunks. Time parsing and
//! escape stripping are tested with them in `airlock_recordings`.

use super::*;

fn cast(lines: &[&str]) -> String {
    let mut s = "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1}\n".to_owned();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[test]
fn scan_matches_lines_with_their_start_time() {
    let text = cast(&[
        r#"[0.100000, "o", "$ "]"#,
        r#"[1.000000, "i", "echo hi\r"]"#,
        r#"[1.200000, "o", "\r\n\u001b[31mre"]"#,
        r#"[1.250000, "o", "d-42\u001b[0m\r\n"]"#,
        r#"[2.000000, "m", "red-42 in a marker is not text"]"#,
        r#"[3.000000, "o", "no match\r\nred-42 again"]"#,
    ]);
    let (hits, full) = scan_stream(text.as_bytes(), "red-42", 10).unwrap();
    assert_eq!(hits, vec![(1_200_000, "red-42".to_owned()), (3_000_000, "red-42 again".to_owned())]);
    assert!(!full);
    let (hits, _) = scan_stream(text.as_bytes(), "echo hi", 10).unwrap();
    assert_eq!(hits, vec![(1_000_000, "echo hi".to_owned())], "typed input is searched");
    let (hits, _) = scan_stream(text.as_bytes(), "RED-42", 10).unwrap();
    assert!(hits.is_empty(), "case-sensitive");
    let (hits, full) = scan_stream(text.as_bytes(), "red", 1).unwrap();
    assert_eq!((hits.len(), full), (1, true));
}

#[test]
fn scan_skips_malformed_and_huge_lines() {
    let mut text = cast(&["not json", r#"[1.0, "o", "ok-1\n"]"#]);
    text.push_str("[2.0, \"o\", \"");
    text.push_str(&"x".repeat(MAX_EVENT_LINE as usize + 10));
    text.push_str("\"]\n");
    text.push_str("\u{0}\u{1}garbage\n[3.0, \"o\", \"ok-3\"]");
    let (hits, _) = scan_stream(text.as_bytes(), "ok-", 10).unwrap();
    assert_eq!(hits, vec![(1_000_000, "ok-1".to_owned()), (3_000_000, "ok-3".to_owned())]);
}

#[test]
fn long_lines_are_cut_for_display() {
    let line = format!("{}needle{}", "a".repeat(1000), "é".repeat(1000));
    let shown = excerpt(&line, 1000, 6);
    assert!(shown.contains("needle") && shown.starts_with('…') && shown.ends_with('…'), "{shown}");
    assert!(shown.len() <= SHOWN_LINE + 8);
    assert_eq!(excerpt("short needle", 6, 6), "short needle");
}

#[test]
fn session_ids_cannot_name_other_files() {
    for bad in ["../x", "a/b", "", ".hidden", "..", "x\u{0}"] {
        assert!(session_id(bad).is_err(), "{bad:?}");
    }
    assert!(session_id("admin-0123456789abcdef0").is_ok());
}

fn manifest(id: &str, started: u64) -> Manifest {
    Manifest {
        meta: airlock_recordings::RecordingMeta {
            session_id: id.into(),
            target: "mi-0123456789abcdef0".into(),
            owner: "arn:airlock:iam::000000000000:user/admin".into(),
            document: "SSM-SessionManagerRunShell".into(),
            width: 80,
            height: 24,
            term: "xterm".into(),
        },
        started_unix_us: started,
        ended_unix_us: started + 5,
        duration_us: 5,
        exit_code: Some(0),
        end_reason: airlock_recordings::EndReason::Exited,
        size: 10,
        sha256: "00".repeat(32),
        events: 2,
    }
}

#[tokio::test]
async fn manifests_list_newest_first_and_bad_ones_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let write = |id: &str, m: &Manifest| {
        std::fs::write(dir.path().join(format!("{id}.manifest.json")), serde_json::to_vec(m).unwrap())
            .unwrap()
    };
    write("a-1", &manifest("a-1", 1_000_000));
    write("a-2", &manifest("a-2", 3_000_000));
    write("a-3", &manifest("other", 2_000_000));
    std::fs::write(dir.path().join("a-4.manifest.json"), b"{not json").unwrap();
    std::fs::write(dir.path().join("a-5.cast.part"), b"x").unwrap();
    let v = list_in(dir.path(), ListRecordings { max_results: Some(1), next_token: None }).await.unwrap();
    assert_eq!(v["Recordings"][0]["SessionId"], "a-2");
    assert_eq!(v["Recordings"][0]["StartDate"], 3);
    assert_eq!(v["Recordings"][0]["EndReason"], "Exited");
    assert_eq!(v["Recordings"][0]["ExitCode"], 0);
    let token = v["NextToken"].as_str().unwrap().to_owned();
    let v = list_in(dir.path(), ListRecordings { max_results: None, next_token: Some(token) }).await.unwrap();
    let ids: Vec<&str> =
        v["Recordings"].as_array().unwrap().iter().map(|r| r["SessionId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-1"]);
    assert!(v.get("NextToken").is_none());
    let missing =
        list_in(&dir.path().join("nope"), ListRecordings { max_results: None, next_token: None }).await;
    assert_eq!(missing.unwrap()["Recordings"], json!([]));
}

#[tokio::test]
async fn chunks_are_bounded_and_missing_recordings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let id: SessionId = "a-1".parse().unwrap();
    let body: Vec<u8> = (0..(MAX_CHUNK + 10)).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("a-1.cast"), &body).unwrap();
    let v = get_in(dir.path(), &id, 0, Some(u64::MAX)).await.unwrap();
    let data = base64::engine::general_purpose::STANDARD.decode(v["Data"].as_str().unwrap()).unwrap();
    assert_eq!(data.len() as u64, MAX_CHUNK);
    assert_eq!(data[..], body[..data.len()]);
    assert_eq!(v["TotalSize"], MAX_CHUNK + 10);
    assert!(v.get("Sha256").is_none(), "no manifest, no checksum");
    std::fs::write(dir.path().join("a-1.manifest.json"), serde_json::to_vec(&manifest("a-1", 1)).unwrap())
        .unwrap();
    let v = get_in(dir.path(), &id, MAX_CHUNK + 4, None).await.unwrap();
    let data = base64::engine::general_purpose::STANDARD.decode(v["Data"].as_str().unwrap()).unwrap();
    assert_eq!(data, body[(MAX_CHUNK + 4) as usize..]);
    assert_eq!(v["Sha256"], "00".repeat(32));
    let v = get_in(dir.path(), &id, MAX_CHUNK + 10, Some(5)).await.unwrap();
    assert_eq!(v["Data"], "");
    assert_eq!(get_in(dir.path(), &id, MAX_CHUNK + 11, None).await.unwrap_err().code, "ValidationException");
    let other: SessionId = "a-2".parse().unwrap();
    std::fs::write(dir.path().join("a-2.cast.part"), b"x").unwrap();
    let err = get_in(dir.path(), &other, 0, None).await.unwrap_err();
    assert_eq!(err.code, "DoesNotExistException");
    assert!(err.message.contains("still being recorded"), "{}", err.message);
}

#[test]
fn search_notes_what_it_skips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a-1.cast");
    std::fs::write(&path, cast(&[r#"[0.5, "o", "find me\n"]"#])).unwrap();
    let now = SystemTime::now();
    let files = vec![
        ("a-1".to_owned(), path.clone(), 10, now),
        ("a-2".to_owned(), path, MAX_SEARCHED_FILE + 1, now),
        ("a-3".to_owned(), dir.path().join("gone.cast"), 10, now),
    ];
    let found = scan(files, "find", 10);
    assert_eq!(found.matches, vec![json!({"SessionId": "a-1", "TimeMicros": 500_000, "Line": "find me"})]);
    let skipped: Vec<&Value> = found.skipped.iter().map(|s| &s["SessionId"]).collect();
    assert_eq!(skipped, [&json!("a-2"), &json!("a-3")]);
    assert!(!found.truncated);
}

#[test]
fn search_work_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.cast");
    std::fs::write(&path, cast(&[r#"[0.5, "o", "hit\n"]"#])).unwrap();
    // Sizes as listed: each under the per-file limit, together over the total budget.
    let claimed = 500 << 20;
    let files: Vec<_> =
        (0..12).map(|i| (format!("a-{i}"), path.clone(), claimed, SystemTime::UNIX_EPOCH)).collect();
    let found = scan(files, "hit", 1000);
    assert_eq!(found.matches.len() as u64, MAX_SEARCH_BYTES / claimed);
    assert_eq!(found.skipped.len(), 1, "one note, then the search stops: {:?}", found.skipped);
    assert!(found.skipped[0]["Reason"].as_str().unwrap().contains("search stopped"));
    let found = scan(vec![("a-1".into(), path, 10, SystemTime::UNIX_EPOCH)], "hit", 1);
    assert!(found.truncated);
}
