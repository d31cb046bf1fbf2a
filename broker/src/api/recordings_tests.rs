//! Tests of `recordings`: time parsing, escape stripping, line matching and the file scan.

use super::*;

fn strip(chunks: &[&str]) -> String {
    let mut s = Stripper::default();
    let mut out = String::new();
    for c in chunks {
        s.push(c, &mut out);
    }
    s.finish(&mut out);
    out
}

#[test]
fn times_are_exact() {
    assert_eq!(parse_time("123.456789"), Some(123_456_789));
    assert_eq!(parse_time("0.000001"), Some(1));
    assert_eq!(parse_time("1.5"), Some(1_500_000));
    assert_eq!(parse_time("7"), Some(7_000_000));
    // Past microseconds the digits are dropped, never rounded through a float.
    assert_eq!(parse_time("0.1234569"), Some(123_456));
    assert_eq!(parse_time("2.999999999"), Some(2_999_999));
    for bad in ["", ".5", "1.", "-1.0", "1e3", "1.2.3", " 1.0", "+1", "9999999999999.0", "１.0"] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
}

#[test]
fn event_lines_parse() {
    let (t, code, data) = parse_event("[12.000345, \"o\", \"a\\u001b[0mb\\n\"]\n").unwrap();
    assert_eq!((t, code.as_str(), data.as_str()), (12_000_345, "o", "a\u{1b}[0mb\n"));
    assert!(parse_event("{\"version\": 2, \"width\": 80}").is_none());
    assert!(parse_event("[1.0, \"o\"]").is_none());
    assert!(parse_event("[1.0e2, \"o\", \"x\"]").is_none());
    assert!(parse_event("").is_none());
}

#[test]
fn stripper_removes_sequences_and_keeps_text() {
    assert_eq!(strip(&["\u{1b}[31mred-42\u{1b}[0m\r\n"]), "red-42\n");
    assert_eq!(strip(&["a\u{1b}]0;title\u{7}b", "c\u{1b}]8;;http://x\u{1b}\\d"]), "abcd");
    assert_eq!(strip(&["\u{1b}(B\u{1b}[m\u{1b}=x\u{1b}7y\u{1b}8"]), "xy");
    assert_eq!(strip(&["\u{1b}[?2004h$ ls\u{8}\u{7}\u{7f}\tz"]), "$ ls\tz");
    assert_eq!(strip(&["\u{1b}Pq#0;2;0;0;0\u{1b}\\ok"]), "ok");
    assert_eq!(strip(&["\u{9b}1mC1\u{9d}t\u{7}!"]), "C1!");
    // Sequences and CRLF split across pushes.
    assert_eq!(strip(&["x\u{1b}", "[3", "8;5;1", "mred\r", "\n"]), "xred\n");
    assert_eq!(strip(&["a\r", "\u{1b}[K\nb"]), "a\nb");
    // A lone \r stays; a held one comes back at the end.
    assert_eq!(strip(&["50%\r100%\r"]), "50%\r100%\r");
    assert_eq!(strip(&["a\r\r\nb"]), "a\r\nb");
    // An interrupted sequence gives its character back to the text.
    assert_eq!(strip(&["\u{1b}[12\nz"]), "\nz");
    assert_eq!(strip(&["é€ 日本"]), "é€ 日本");
}

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
    let v = list(dir.path(), ListRecordings { max_results: Some(1), next_token: None }).await.unwrap();
    assert_eq!(v["Recordings"][0]["SessionId"], "a-2");
    assert_eq!(v["Recordings"][0]["StartDate"], 3);
    assert_eq!(v["Recordings"][0]["EndReason"], "Exited");
    assert_eq!(v["Recordings"][0]["ExitCode"], 0);
    let token = v["NextToken"].as_str().unwrap().to_owned();
    let v = list(dir.path(), ListRecordings { max_results: None, next_token: Some(token) }).await.unwrap();
    let ids: Vec<&str> =
        v["Recordings"].as_array().unwrap().iter().map(|r| r["SessionId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-1"]);
    assert!(v.get("NextToken").is_none());
    let missing =
        list(&dir.path().join("nope"), ListRecordings { max_results: None, next_token: None }).await;
    assert_eq!(missing.unwrap()["Recordings"], json!([]));
}

#[tokio::test]
async fn chunks_are_bounded_and_missing_recordings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let id: SessionId = "a-1".parse().unwrap();
    let body: Vec<u8> = (0..(MAX_CHUNK + 10)).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("a-1.cast"), &body).unwrap();
    let v = get(dir.path(), &id, 0, Some(u64::MAX)).await.unwrap();
    let data = base64::engine::general_purpose::STANDARD.decode(v["Data"].as_str().unwrap()).unwrap();
    assert_eq!(data.len() as u64, MAX_CHUNK);
    assert_eq!(data[..], body[..data.len()]);
    assert_eq!(v["TotalSize"], MAX_CHUNK + 10);
    assert!(v.get("Sha256").is_none(), "no manifest, no checksum");
    std::fs::write(dir.path().join("a-1.manifest.json"), serde_json::to_vec(&manifest("a-1", 1)).unwrap())
        .unwrap();
    let v = get(dir.path(), &id, MAX_CHUNK + 4, None).await.unwrap();
    let data = base64::engine::general_purpose::STANDARD.decode(v["Data"].as_str().unwrap()).unwrap();
    assert_eq!(data, body[(MAX_CHUNK + 4) as usize..]);
    assert_eq!(v["Sha256"], "00".repeat(32));
    let v = get(dir.path(), &id, MAX_CHUNK + 10, Some(5)).await.unwrap();
    assert_eq!(v["Data"], "");
    assert_eq!(get(dir.path(), &id, MAX_CHUNK + 11, None).await.unwrap_err().code, "ValidationException");
    let other: SessionId = "a-2".parse().unwrap();
    std::fs::write(dir.path().join("a-2.cast.part"), b"x").unwrap();
    let err = get(dir.path(), &other, 0, None).await.unwrap_err();
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
