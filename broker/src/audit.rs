//! Tamper evidence for the audit log: each stored event carries
//! `hash = hex(SHA-256(prev_hash || "\n" || canonical JSON of the event))`, where `prev_hash`
//! is the previous event's hash, so editing, deleting or moving one event breaks the chain
//! from that event on.
//!
//! The chain holds no secret: someone able to rewrite the whole table can recompute every
//! hash. It proves the log was not altered piecemeal; keeping a copy of a recent hash
//! elsewhere (a ticket, another system) extends that to the history before it.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::AuditEvent;

/// The `prev_hash` of the first chained event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed form of an event. Fields are declared in alphabetical order because serde
/// writes struct fields in declaration order, whatever features serde_json was built with.
#[derive(Serialize)]
struct Canonical<'a> {
    action: &'a str,
    at_us: i64,
    decision: &'a str,
    policy: Option<&'a str>,
    principal: &'a str,
    resource: &'a str,
    seq: i64,
    sid: Option<&'a str>,
    source_ip: &'a str,
    statement_index: Option<i64>,
}

/// The canonical encoding of event `seq`: compact JSON, keys sorted, absent values as null.
pub fn canonical(seq: i64, e: &AuditEvent) -> String {
    let c = Canonical {
        action: &e.action,
        at_us: e.at_us,
        decision: &e.decision,
        policy: e.policy.as_deref(),
        principal: &e.principal,
        resource: &e.resource,
        seq,
        sid: e.sid.as_deref(),
        source_ip: &e.source_ip,
        statement_index: e.statement_index,
    };
    // Strings and integers always serialize; an empty text would still break the chain
    // visibly rather than silently.
    serde_json::to_string(&c).unwrap_or_default()
}

/// The chain hash of event `seq` following `prev_hash`, as lowercase hex.
pub fn chain_hash(prev_hash: &str, seq: i64, e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical(seq, e).as_bytes());
    hex::encode(h.finalize())
}

/// One stored audit row as the verifier sees it.
#[derive(Debug, Clone)]
pub struct ChainRow {
    /// Position in the log, from 1.
    pub seq: i64,
    /// The recorded decision.
    pub event: AuditEvent,
    /// Hash of the previous row, as stored.
    pub prev_hash: Option<String>,
    /// This row's hash, as stored.
    pub hash: Option<String>,
}

/// The outcome of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Whether every row is present, unaltered and in order.
    pub valid: bool,
    /// How many rows the log holds.
    pub events: u64,
    /// The first event that is missing, altered or out of place.
    pub first_broken_seq: Option<i64>,
    /// What the check found, for people.
    pub message: String,
}

/// Checks rows fed in ascending seq order; after the first break it only counts.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    events: u64,
    /// Rows written before the chain existed (both hash columns NULL, before any hashed row).
    legacy: u64,
    last_seq: i64,
    /// The previous row's hash, once the chain has started.
    last_hash: Option<String>,
    broken: Option<(i64, String)>,
}

impl ChainVerifier {
    /// A verifier that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next row.
    pub fn push(&mut self, row: ChainRow) {
        self.events += 1;
        if self.broken.is_some() {
            return;
        }
        let seq = row.seq;
        let expected = self.last_seq + 1;
        if seq != expected {
            // Seq comes from AUTOINCREMENT inside the appending transaction, so a hole means
            // a row was deleted.
            let why = if seq == expected + 1 {
                format!("event {expected} is missing: event {} is followed by {seq}", self.last_seq)
            } else if seq > expected {
                format!("events {expected} to {} are missing", seq - 1)
            } else {
                format!("event {seq} is out of order after event {}", self.last_seq)
            };
            self.broken = Some((expected.min(seq), why));
            return;
        }
        self.last_seq = seq;
        let (prev, hash) = match (row.prev_hash, row.hash) {
            (None, None) if self.last_hash.is_none() => {
                self.legacy += 1;
                return;
            }
            (None, None) => {
                self.broken =
                    Some((seq, format!("event {seq} has no hash although earlier events are chained")));
                return;
            }
            (Some(p), Some(h)) => (p, h),
            _ => {
                self.broken = Some((seq, format!("event {seq} has only one of prev_hash and hash")));
                return;
            }
        };
        let expected_prev = self.last_hash.as_deref().unwrap_or(GENESIS);
        if prev != expected_prev {
            let why = if self.last_hash.is_some() {
                format!(
                    "event {seq} does not follow event {}: its prev_hash differs from that event's hash",
                    seq - 1
                )
            } else {
                format!("event {seq} starts the chain but its prev_hash is not the genesis value")
            };
            self.broken = Some((seq, why));
            return;
        }
        if chain_hash(&prev, seq, &row.event) != hash {
            self.broken =
                Some((seq, format!("event {seq} was altered: its content does not match its hash")));
            return;
        }
        self.last_hash = Some(hash);
    }

    /// The verdict. `last_assigned` is the highest seq the database ever handed out, which
    /// exposes events deleted from the end of the log.
    pub fn finish(mut self, last_assigned: i64) -> ChainReport {
        if self.broken.is_none() && last_assigned > self.last_seq {
            let first = self.last_seq + 1;
            let why = if first == last_assigned {
                format!("event {first}, the newest, was deleted")
            } else {
                format!("events {first} to {last_assigned}, the newest, were deleted")
            };
            self.broken = Some((first, why));
        }
        let legacy = match self.legacy {
            0 => String::new(),
            n if n == self.events => {
                format!("; all {n} events are unchained legacy rows from before the hash chain")
            }
            n => format!("; the first {n} events are unchained legacy rows from before the hash chain"),
        };
        match self.broken {
            Some((seq, why)) => ChainReport {
                valid: false,
                events: self.events,
                first_broken_seq: Some(seq),
                message: format!("audit log chain broken: {why}{legacy}"),
            },
            None => ChainReport {
                valid: true,
                events: self.events,
                first_broken_seq: None,
                message: if self.events == 0 {
                    "the audit log is empty".to_owned()
                } else {
                    format!("{} events, hash chain intact{legacy}", self.events)
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at_us: 1_700_000_000_000_000 + n,
            principal: "arn:airlock:iam::123456789012:user/admin".into(),
            action: "ssm:StartSession".into(),
            resource: format!("arn:airlock:ssm:us-east-1:123456789012:managed-instance/mi-{n}"),
            decision: if n % 2 == 0 { "allowed".into() } else { "implicitDeny".into() },
            policy: (n % 2 == 0).then(|| "admin".to_owned()),
            sid: None,
            statement_index: (n % 2 == 0).then_some(0),
            source_ip: "127.0.0.1".into(),
        }
    }

    /// A correctly chained log of `n` events, seq 1..=n.
    fn chain(n: i64) -> Vec<ChainRow> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let hash = chain_hash(&prev, seq, &event(seq));
                let row = ChainRow {
                    seq,
                    event: event(seq),
                    prev_hash: Some(prev.clone()),
                    hash: Some(hash.clone()),
                };
                prev = hash;
                row
            })
            .collect()
    }

    fn verify(rows: Vec<ChainRow>, last_assigned: i64) -> ChainReport {
        let mut v = ChainVerifier::new();
        rows.into_iter().for_each(|r| v.push(r));
        v.finish(last_assigned)
    }

    #[test]
    fn canonical_form_is_fixed() {
        let e = AuditEvent {
            at_us: 5,
            principal: "p\"q".into(),
            action: "ssm:StartSession".into(),
            resource: "*".into(),
            decision: "allowed".into(),
            policy: Some("admin".into()),
            sid: None,
            statement_index: Some(0),
            source_ip: "::1".into(),
        };
        assert_eq!(
            canonical(7, &e),
            r#"{"action":"ssm:StartSession","at_us":5,"decision":"allowed","policy":"admin","principal":"p\"q","resource":"*","seq":7,"sid":null,"source_ip":"::1","statement_index":0}"#
        );
        let expect = hex::encode(Sha256::digest(format!("{GENESIS}\n{}", canonical(7, &e)).as_bytes()));
        assert_eq!(chain_hash(GENESIS, 7, &e), expect);
        assert_eq!(GENESIS.len(), 64);
        // The seq and the predecessor are part of what is hashed.
        assert_ne!(chain_hash(GENESIS, 8, &e), expect);
        assert_ne!(chain_hash(&expect, 7, &e), expect);
    }

    #[test]
    fn intact_chain_and_empty_log_are_valid() {
        let r = verify(chain(5), 5);
        assert_eq!((r.valid, r.events, r.first_broken_seq), (true, 5, None), "{}", r.message);
        let r = verify(Vec::new(), 0);
        assert_eq!((r.valid, r.events, r.message.as_str()), (true, 0, "the audit log is empty"));
    }

    #[test]
    fn an_edited_field_breaks_at_that_event() {
        let mut rows = chain(4);
        rows[1].event.decision = "explicitDeny".into();
        let r = verify(rows, 4);
        assert_eq!((r.valid, r.first_broken_seq, r.events), (false, Some(2), 4));
        assert!(r.message.contains("altered"), "{}", r.message);
    }

    #[test]
    fn a_rehashed_edit_breaks_at_the_next_event() {
        let mut rows = chain(4);
        rows[1].event.sid = Some("x".into());
        let prev = rows[1].prev_hash.clone().unwrap();
        rows[1].hash = Some(chain_hash(&prev, 2, &rows[1].event));
        assert_eq!(verify(rows, 4).first_broken_seq, Some(3));
    }

    #[test]
    fn deleted_rows_are_found_in_the_middle_at_the_start_and_at_the_end() {
        let mut rows = chain(5);
        rows.remove(2);
        let r = verify(rows, 5);
        assert_eq!((r.valid, r.first_broken_seq), (false, Some(3)));
        assert!(r.message.contains("event 3 is missing"), "{}", r.message);

        let mut rows = chain(5);
        rows.remove(0);
        assert_eq!(verify(rows, 5).first_broken_seq, Some(1));

        let mut rows = chain(5);
        rows.truncate(3);
        let r = verify(rows, 5);
        assert_eq!((r.valid, r.first_broken_seq), (false, Some(4)));
        assert!(r.message.contains("events 4 to 5"), "{}", r.message);
    }

    #[test]
    fn moved_rows_are_found() {
        // Two rows swap places, each keeping its hashes: seq is hashed, so both break.
        let mut rows = chain(4);
        let (a, b) = (rows[1].clone(), rows[2].clone());
        rows[1] = ChainRow { seq: 2, ..b };
        rows[2] = ChainRow { seq: 3, ..a };
        assert_eq!(verify(rows, 4).first_broken_seq, Some(2));

        // Renumbered after a deletion to close the hole: the prev_hash no longer matches.
        let mut rows = chain(4);
        rows.remove(1);
        rows[1].seq = 2;
        rows[2].seq = 3;
        assert_eq!(verify(rows, 3).first_broken_seq, Some(2));
    }

    #[test]
    fn legacy_prefix_is_reported_but_a_later_gap_in_hashes_breaks() {
        let legacy = |seq| ChainRow { seq, event: event(seq), prev_hash: None, hash: None };
        let mut rows = vec![legacy(1), legacy(2)];
        let mut prev = GENESIS.to_owned();
        for seq in 3..=4 {
            let hash = chain_hash(&prev, seq, &event(seq));
            rows.push(ChainRow { seq, event: event(seq), prev_hash: Some(prev), hash: Some(hash.clone()) });
            prev = hash;
        }
        let r = verify(rows.clone(), 4);
        assert!(r.valid, "{}", r.message);
        assert!(r.message.contains("first 2 events are unchained legacy rows"), "{}", r.message);

        let r = verify(vec![legacy(1), legacy(2)], 2);
        assert!(r.valid && r.message.contains("all 2 events"), "{}", r.message);

        rows.push(legacy(5));
        let r = verify(rows.clone(), 5);
        assert_eq!((r.valid, r.first_broken_seq), (false, Some(5)));

        rows.pop();
        rows[3].hash = None;
        assert_eq!(verify(rows, 4).first_broken_seq, Some(4));
    }
}
