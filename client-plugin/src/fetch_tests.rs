//! Tests of `fetch`: base64, SHA-256, and exports against a tiny broker stand-in.

use super::*;
use crate::credentials::Credentials;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn base64_vectors() {
    let cases: [(&str, &[u8]); 8] = [
        ("", b""),
        ("Zg==", b"f"),
        ("Zm8=", b"fo"),
        ("Zm9v", b"foo"),
        ("Zm9vYg==", b"foob"),
        ("Zm9vYmE=", b"fooba"),
        ("Zm9vYmFy", b"foobar"),
        ("AP/+7Q==", &[0x00, 0xff, 0xfe, 0xed]),
    ];
    for (text, bytes) in cases {
        assert_eq!(decode_data(text).as_deref(), Some(bytes), "{text}");
    }
    for bad in ["Zg=", "Zg===", "Z===", "Zg==Zm8=", "Zm9v!A==", "Zm 9", "Z=g="] {
        assert_eq!(decode_data(bad), None, "{bad}");
    }
}

#[test]
fn sha256_vectors() {
    let hex = |data: &[&[u8]]| {
        let mut h = Sha256::new();
        data.iter().for_each(|d| h.update(d));
        hex_digest(h)
    };
    assert_eq!(hex(&[]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(hex(&[b"a", b"bc"]), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/// Serves GetRecording for `file` in chunks of at most 7 bytes, claiming `sha`.
async fn serve(file: Vec<u8>, sha: Option<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned)
                        })
                        .unwrap()
                        .parse()
                        .unwrap();
                    if body.len() == len {
                        break body.to_owned();
                    }
                }
            };
            let req: Value = serde_json::from_str(&body).unwrap();
            let offset = req["Offset"].as_u64().unwrap() as usize;
            let end = (offset + 7).min(file.len());
            let data = &file[offset..end];
            let mut reply = json!({
                "SessionId": req["SessionId"],
                "Offset": offset,
                "Data": encode(data),
                "TotalSize": file.len(),
            });
            if let Some(s) = &sha {
                reply["Sha256"] = json!(s);
            }
            let reply = reply.to_string();
            let http = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
            sock.write_all(http.as_bytes()).await.unwrap();
            sock.shutdown().await.unwrap();
        }
    });
    format!("http://{addr}")
}

fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

fn sha_of(data: &[u8]) -> String {
    hex_digest(Sha256::new_with_prefix(data))
}

/// A scratch folder, removed on drop (the CLI has no tempfile dependency).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("airlock-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client(url: &str) -> Client {
    Client::from_url(url, None, "us-east-1", Credentials::new("AKID", "secret", None)).unwrap()
}

#[test]
fn test_encoder_agrees_with_decoder() {
    for len in 0..20 {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(decode_data(&encode(&data)).unwrap(), data);
    }
}

#[tokio::test]
async fn export_writes_the_exact_bytes_in_chunks() {
    let file: Vec<u8> = b"{\"version\": 2}\n[0.5, \"o\", \"hi\"]\n".repeat(3);
    let url = serve(file.clone(), Some(sha_of(&file))).await;
    let dir = Scratch::new("export-ok");
    let path = dir.path().join("out.cast");
    let (size, digest) = export(&client(&url), "admin-1", &path).await.unwrap();
    assert_eq!(size, file.len() as u64);
    assert_eq!(digest, sha_of(&file));
    assert_eq!(std::fs::read(&path).unwrap(), file);
    assert!(!dir.path().join("out.cast.part").exists());
}

#[tokio::test]
async fn export_refuses_a_checksum_mismatch() {
    let file = b"recorded bytes that were altered".to_vec();
    let url = serve(file, Some(sha_of(b"the original bytes"))).await;
    let dir = Scratch::new("export-bad");
    let path = dir.path().join("out.cast");
    let err = export(&client(&url), "admin-1", &path).await.unwrap_err();
    assert!(err.to_string().contains("SHA-256 MISMATCH"), "{err}");
    assert!(!path.exists() && !dir.path().join("out.cast.part").exists(), "nothing is left behind");

    let url = serve(b"no manifest".to_vec(), None).await;
    let err = export(&client(&url), "admin-1", &path).await.unwrap_err();
    assert!(err.to_string().contains("gave no SHA-256"), "{err}");
    assert!(!path.exists());
}

#[tokio::test]
async fn empty_recordings_end_at_once() {
    let url = serve(Vec::new(), Some(sha_of(b""))).await;
    let client = client(&url);
    let mut f = Fetcher::new(&client, "admin-1");
    assert_eq!(f.next().await.unwrap(), None);
    assert_eq!(f.next().await.unwrap(), None);
    assert_eq!(f.verify().unwrap(), sha_of(b""));
}

#[tokio::test]
async fn cat_and_play_show_the_output_events() {
    let file = concat!(
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1}\n",
        "[0.010000, \"o\", \"$ \"]\n",
        "[0.020000, \"i\", \"typed\\r\"]\n",
        "[0.030000, \"o\", \"\\u001b[31mred-42\\u001b[0m\\r\\n\"]\n",
        "[0.030000, \"r\", \"100x30\"]\n",
        "[5.000000, \"o\", \"bye\\r\\n\"]\n",
        "[5.000001, \"m\", \"session ended: Exited, exit code 0\"]\n",
    )
    .as_bytes()
    .to_vec();
    let url = serve(file.clone(), Some(sha_of(&file))).await;
    let client = client(&url);
    let mut out = Vec::new();
    crate::playback::cat(crate::playback::Events::new(Fetcher::new(&client, "admin-1")), &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "$ red-42\nbye\n");

    // 5 s of recording at speed 10 with pauses cut to 1 s: about 0.1 s.
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let events = crate::playback::Events::new(Fetcher::new(&client, "admin-1"));
    let speed = crate::playback::parse_speed("10").unwrap();
    crate::playback::play(events, speed, Some(1_000_000), &mut out).await.unwrap();
    let took = started.elapsed();
    assert_eq!(String::from_utf8(out).unwrap(), "$ \u{1b}[31mred-42\u{1b}[0m\r\nbye\r\n");
    assert!(took >= std::time::Duration::from_millis(100), "{took:?}");
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}
