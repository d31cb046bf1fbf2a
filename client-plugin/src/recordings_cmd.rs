//! `airlock recordings …`: list, print, replay, search and export recorded sessions; and
//! [`Job`], the commands (these and `audit verify`) that make their own calls and print their
//! own output rather than one response.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::api::{ApiError, Client};
use crate::audit_cmd::AuditCommand;
use crate::error::Error;
use crate::fetch::{self, Fetcher};
use crate::playback::{self, Events, Speed};

/// Checks a session id before it is sent or used in a file name (no `/`, no leading dot).
pub fn parse_session_id(text: &str) -> Result<String, String> {
    let id: airlock_proto::SessionId = text.parse().map_err(|e| format!("{e}"))?;
    if id.as_str().starts_with('.') {
        return Err(format!("{text:?} is not a session id"));
    }
    Ok(id.into())
}

/// `SESSION_ID` of a recording.
#[derive(Debug, Args)]
pub struct Session {
    /// The recorded session (admin-…).
    #[arg(value_name = "SESSION_ID", value_parser = parse_session_id)]
    pub session_id: String,
}

/// Paging of `recordings list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Maximum recordings per page (1 to 1000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_results: Option<u64>,
    /// Token from a previous page's NextToken.
    #[arg(long, value_name = "TOKEN")]
    pub next_token: Option<String>,
}

/// `recordings play`.
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The recording to replay.
    #[command(flatten)]
    pub session: Session,
    /// Playback speed: 2 plays twice as fast, 0.5 at half speed.
    #[arg(long, value_name = "F", default_value = "1", value_parser = playback::parse_speed)]
    pub speed: Speed,
    /// Shorten every pause longer than this many seconds (of recorded time) to it.
    #[arg(long, value_name = "SECONDS", value_parser = playback::parse_seconds)]
    pub idle_limit: Option<u64>,
}

/// `recordings search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Text to look for (case-sensitive) in what sessions showed and what was typed.
    #[arg(value_name = "PATTERN")]
    pub pattern: String,
    /// Stop after this many matches (1 to 1000; the broker's default is 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_results: Option<u64>,
}

/// `recordings export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The recording to save.
    #[command(flatten)]
    pub session: Session,
    /// File to write (default: SESSION_ID.cast in the current folder).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `airlock recordings …`.
#[derive(Debug, Subcommand)]
pub enum RecordingsCommand {
    /// List finished recordings, newest first.
    List(ListArgs),
    /// Print what a session showed as plain text, escape sequences removed.
    Cat(Session),
    /// Replay a session's output on this terminal with its original timing.
    Play(PlayArgs),
    /// Search the text of every finished recording; prints SESSION_ID  +MM:SS.mmm  LINE.
    Search(SearchArgs),
    /// Save a recording's exact .cast file, checked against the SHA-256 in its manifest.
    Export(ExportArgs),
    /// Show the broker's recording spool and the deliveries not yet confirmed by a sink;
    /// exits 3 when the spool's alarm is raised, for monitoring.
    Status,
}

/// A command that makes its own calls and prints its own output.
#[derive(Debug)]
pub enum Job {
    /// `recordings …`.
    Recordings(RecordingsCommand),
    /// `audit …`.
    Audit(AuditCommand),
}

impl Job {
    /// Runs the command; returns the exit status.
    pub async fn run(self, client: &Client) -> anyhow::Result<i32> {
        match self {
            Job::Recordings(c) => c.run(client).await,
            Job::Audit(c) => c.run(client).await,
        }
    }
}

/// Writes `bytes` to stdout without blocking the runtime.
pub async fn print(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    out.write_all(bytes).await?;
    out.flush().await?;
    Ok(())
}

/// The request body of `recordings list`.
pub fn list_body(args: &ListArgs) -> Value {
    let mut body = Map::new();
    if let Some(n) = args.max_results {
        body.insert("MaxResults".into(), json!(n));
    }
    if let Some(t) = &args.next_token {
        body.insert("NextToken".into(), json!(t));
    }
    Value::Object(body)
}

/// The request body of `recordings search`.
pub fn search_body(args: &SearchArgs) -> Value {
    let mut body = json!({ "Pattern": args.pattern });
    if let Some(n) = args.max_results {
        body["MaxResults"] = json!(n);
    }
    body
}

/// A time offset as `+MM:SS.mmm` (minutes go past 59 for long sessions).
pub fn offset(time_us: u64) -> String {
    let ms = time_us / 1000;
    format!("+{:02}:{:02}.{:03}", ms / 60_000, ms / 1000 % 60, ms % 1000)
}

/// The lines `recordings search` prints for a SearchRecordings response, and its notes for
/// stderr.
pub fn search_lines(response: &Value) -> Result<(String, String), Error> {
    let bad = |what: &str| Error::Api(ApiError::response("SearchRecordings", Some(200), what.to_owned()));
    let matches = response["Matches"].as_array().ok_or_else(|| bad("no Matches list"))?;
    let mut out = String::new();
    for m in matches {
        let (Some(id), Some(t), Some(line)) =
            (m["SessionId"].as_str(), m["TimeMicros"].as_u64(), m["Line"].as_str())
        else {
            return Err(bad("a match lacks SessionId, TimeMicros or Line"));
        };
        // The broker strips escapes; controls are dropped again so no reply can drive the terminal.
        let line: String = line.chars().filter(|c| !c.is_control() || *c == '\t').collect();
        out.push_str(&format!("{id}  {}  {line}\n", offset(t)));
    }
    let mut notes = String::new();
    for s in response["Skipped"].as_array().into_iter().flatten() {
        let id = s["SessionId"].as_str().unwrap_or("?");
        notes.push_str(&format!("note: {id} was not searched: {}\n", s["Reason"].as_str().unwrap_or("?")));
    }
    if response["Truncated"].as_bool() == Some(true) {
        notes.push_str(&format!("note: stopped after {} matches (--max-results)\n", matches.len()));
    }
    Ok((out, notes))
}

impl RecordingsCommand {
    /// Runs the command; returns the exit status.
    pub async fn run(self, client: &Client) -> anyhow::Result<i32> {
        match self {
            RecordingsCommand::Status => {
                let v = client
                    .call_target(&fetch::target("GetRecordingStatus"), &json!({}))
                    .await
                    .map_err(Error::from)?;
                let mut text = Vec::new();
                crate::call::write_json(&mut text, &v)?;
                print(&text).await?;
                if v["Spool"]["Alarm"].as_bool() == Some(true) {
                    return Ok(3);
                }
            }
            RecordingsCommand::List(args) => {
                let v = client
                    .call_target(&fetch::target("ListRecordings"), &list_body(&args))
                    .await
                    .map_err(Error::from)?;
                let mut text = Vec::new();
                crate::call::write_json(&mut text, &v)?;
                print(&text).await?;
            }
            RecordingsCommand::Cat(s) => {
                let events = Events::new(Fetcher::new(client, &s.session_id));
                playback::cat(events, &mut tokio::io::stdout()).await?;
            }
            RecordingsCommand::Play(a) => {
                let events = Events::new(Fetcher::new(client, &a.session.session_id));
                playback::play(events, a.speed, a.idle_limit, &mut tokio::io::stdout()).await?;
            }
            RecordingsCommand::Search(args) => {
                let v = client
                    .call_target(&fetch::target("SearchRecordings"), &search_body(&args))
                    .await
                    .map_err(Error::from)?;
                let (lines, notes) = search_lines(&v)?;
                print(lines.as_bytes()).await?;
                if !notes.is_empty() {
                    let mut err = tokio::io::stderr();
                    err.write_all(notes.as_bytes()).await?;
                    err.flush().await?;
                }
            }
            RecordingsCommand::Export(a) => {
                let id = &a.session.session_id;
                let path = a.output.unwrap_or_else(|| fetch::default_export_path(id));
                let (size, digest) = fetch::export(client, id, &path).await?;
                let note = format!("wrote {} ({size} bytes, SHA-256 {digest} verified)\n", path.display());
                let mut err = tokio::io::stderr();
                err.write_all(note.as_bytes()).await?;
                err.flush().await?;
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        recordings: RecordingsCommand,
    }

    fn parse(args: &[&str]) -> Result<RecordingsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("recordings").chain(args.iter().copied())).map(|c| c.recordings)
    }

    #[test]
    fn command_lines() {
        let RecordingsCommand::Play(p) =
            parse(&["play", "admin-1", "--speed", "0.5", "--idle-limit", "2"]).unwrap()
        else {
            panic!("expected play")
        };
        assert_eq!(p.speed, playback::parse_speed("0.5").unwrap());
        assert_eq!(p.idle_limit, Some(2_000_000));
        let RecordingsCommand::Play(p) = parse(&["play", "admin-1"]).unwrap() else {
            panic!("expected play")
        };
        assert_eq!((p.speed, p.idle_limit), (Speed::NORMAL, None));
        let RecordingsCommand::Export(e) = parse(&["export", "admin-1", "-o", "x.cast"]).unwrap() else {
            panic!("expected export")
        };
        assert_eq!(e.output, Some(PathBuf::from("x.cast")));
        let RecordingsCommand::Search(s) = parse(&["search", "red-42", "--max-results", "5"]).unwrap() else {
            panic!("expected search")
        };
        assert_eq!(search_body(&s), json!({"Pattern": "red-42", "MaxResults": 5}));
        let RecordingsCommand::List(l) = parse(&["list"]).unwrap() else { panic!("expected list") };
        assert_eq!(list_body(&l), json!({}));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for args in [
            vec!["cat", "../x"],
            vec!["cat", ".hidden"],
            vec!["export", "a/b"],
            vec!["play", "admin-1", "--speed", "0"],
            vec!["play", "admin-1", "--speed", "-2"],
            vec!["play", "admin-1", "--idle-limit", "1e3"],
            vec!["search", "x", "--max-results", "0"],
            vec!["search", "x", "--max-results", "1001"],
            vec!["search"],
            vec!["cat"],
        ] {
            let err = parse(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(offset(0), "+00:00.000");
        assert_eq!(offset(1_234_567), "+00:01.234");
        assert_eq!(offset(61_001_000), "+01:01.001");
        assert_eq!(offset(7_384_999_999), "+123:04.999");
    }

    #[test]
    fn search_output() {
        let v = json!({
            "Matches": [
                {"SessionId": "admin-1", "TimeMicros": 1_500_000, "Line": "red-42"},
                {"SessionId": "admin-2", "TimeMicros": 65_000_000, "Line": "a\u{1b}]0;x\u{7}b"}
            ],
            "Truncated": true,
            "Skipped": [{"SessionId": "admin-3", "Reason": "larger than 512 MiB"}]
        });
        let (lines, notes) = search_lines(&v).unwrap();
        assert_eq!(lines, "admin-1  +00:01.500  red-42\nadmin-2  +01:05.000  a]0;xb\n");
        assert!(notes.contains("admin-3 was not searched: larger than 512 MiB"), "{notes}");
        assert!(notes.contains("stopped after 2 matches"), "{notes}");
        assert_eq!(search_lines(&json!({"Matches": []})).unwrap(), (String::new(), String::new()));
        assert!(search_lines(&json!({})).is_err());
        assert!(search_lines(&json!({"Matches": [{"SessionId": "a"}]})).is_err());
    }
}
