//! Golden tests of the SSM codec and data channel against frames recorded between the stock
//! session-manager-plugin 1.2.677.0 and a fake broker (`tests/ssm-vectors/`, copied from the
//! shared capture so that a clean clone is self-contained).
//!
//! * every binary frame decodes to exactly the recorded fields;
//! * every frame re-encodes, from the recorded fields, byte for byte (and decode → encode
//!   is the identity on every space-padded frame);
//! * every typed JSON payload re-serialises byte for byte;
//! * every session is replayed through two [`DataChannel`]s (one per side) to check delivery,
//!   acknowledgements, duplicates, wrong digests, out-of-order and resends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use airlock_proto::ssm::message::{uuid_to_wire, AgentMessage, MessageType, PayloadType, TypePadding};
use airlock_proto::ssm::payload::{
    AcknowledgeContent, ChannelClosed, Flag, HandshakeComplete, HandshakeRequest, HandshakeResponse,
    OpenDataChannel, SizeData,
};
use airlock_proto::ssm::smux::{Cmd, SmuxDecoder};
use airlock_proto::ssm::{ChannelConfig, ChannelEvent, DataChannel, DropReason, Side};
use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

const FILES: [&str; 5] = [
    "edge-cases.json",
    "port-forwarding-smux.json",
    "port-ssh-stdio.json",
    "shell-no-handshake.json",
    "shell-standard-stream.json",
];

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ssm-vectors")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(vectors_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn frames(v: &Value) -> &Vec<Value> {
    v["frames"].as_array().unwrap()
}

fn is_binary(f: &Value) -> bool {
    f["kind"] == "binary"
}

fn from_client(f: &Value) -> bool {
    f["direction"] == "client->broker"
}

fn wire(f: &Value) -> Vec<u8> {
    hex::decode(f["hex"].as_str().unwrap()).unwrap()
}

/// The recorded payload bytes (`payload_text` or `payload_hex`).
fn recorded_payload(d: &Value) -> Vec<u8> {
    if let Some(t) = d["payload_text"].as_str() {
        t.as_bytes().to_vec()
    } else if let Some(h) = d["payload_hex"].as_str() {
        hex::decode(h).unwrap()
    } else {
        Vec::new()
    }
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

/// Re-serialises a JSON payload through its typed struct and checks the bytes are unchanged.
fn typed_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(payload: &[u8], what: &str) {
    let typed: T = serde_json::from_slice(payload).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(serde_json::to_vec(&typed).unwrap(), payload, "{what} does not re-serialise byte for byte");
}

#[test]
fn every_vector_file_is_tested() {
    let mut on_disk: Vec<String> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, FILES.to_vec());
}

#[test]
fn every_frame_decodes_to_the_recorded_fields() {
    let (mut client, mut broker) = (0, 0);
    for name in FILES {
        let v = load(name);
        for f in frames(&v) {
            let at = format!("{name} frame {}", f["index"]);
            if !is_binary(f) {
                // The one text frame: OpenDataChannel, member order preserved.
                let text = f["text"].as_str().unwrap();
                let o: OpenDataChannel = serde_json::from_str(text).unwrap();
                assert_eq!(serde_json::to_value(&o).unwrap(), f["decoded"], "{at}");
                assert_eq!(serde_json::to_string(&o).unwrap(), text, "{at}");
                assert_eq!(o.client_version.as_deref(), Some("1.2.677.0"));
                continue;
            }
            let d = &f["decoded"];
            let bytes = wire(f);
            let m = AgentMessage::decode(&bytes).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(u64_of(&d["header_length"]), 116, "{at}");
            assert_eq!(m.message_type.as_str(), d["message_type"], "{at}");
            assert_eq!(u64::from(m.schema_version), u64_of(&d["schema_version"]), "{at}");
            assert_eq!(m.created_date, u64_of(&d["created_date"]), "{at}");
            assert_eq!(m.sequence_number, d["sequence_number"].as_i64().unwrap(), "{at}");
            assert_eq!(m.flags, u64_of(&d["flags"]), "{at}");
            assert_eq!(m.message_id.to_string(), d["message_id"], "{at}");
            assert_eq!(hex::encode(uuid_to_wire(&m.message_id)), d["message_id_wire_hex"], "{at}");
            assert_eq!(hex::encode(m.payload_digest), d["payload_digest"], "{at}");
            assert_eq!(
                Value::Bool(m.digest_matches()),
                d["payload_digest_matches_sha256_of_payload"],
                "{at}"
            );
            assert_eq!(u64::from(m.payload_type as u32), u64_of(&d["payload_type"]), "{at}");
            assert_eq!(m.payload.len() as u64, u64_of(&d["payload_length"]), "{at}");
            assert_eq!(&m.payload[..], &recorded_payload(d)[..], "{at}");
            if d["message_type_padding"] == "spaces" {
                assert_eq!(&m.encode()[..], &bytes[..], "{at}: decode → encode");
            }
            check_typed_payload(&m, f, &at);
            if from_client(f) {
                client += 1;
            } else {
                broker += 1;
            }
        }
    }
    // 104 binary frames from the plugin, 91 from the fake broker (the README's 195).
    assert_eq!((client, broker), (104, 91));
}

fn check_typed_payload(m: &AgentMessage, f: &Value, at: &str) {
    let p = &m.payload[..];
    match (m.message_type, m.payload_type) {
        (MessageType::Acknowledge, _) => typed_round_trip::<AcknowledgeContent>(p, at),
        (MessageType::ChannelClosed, _) => typed_round_trip::<ChannelClosed>(p, at),
        (_, PayloadType::HandshakeRequest) => typed_round_trip::<HandshakeRequest>(p, at),
        (_, PayloadType::HandshakeResponse) => typed_round_trip::<HandshakeResponse>(p, at),
        (_, PayloadType::HandshakeComplete) => typed_round_trip::<HandshakeComplete>(p, at),
        (_, PayloadType::Size) => typed_round_trip::<SizeData>(p, at),
        (_, PayloadType::Flag) => {
            let flag = Flag::decode(p).unwrap();
            assert_eq!(u64::from(flag.value()), u64_of(&f["decoded"]["flag_value"]), "{at}");
            assert_eq!(&flag.encode()[..], p, "{at}");
        }
        _ => {}
    }
}

#[test]
fn every_frame_reencodes_from_the_recorded_fields_byte_identically() {
    let (mut client, mut broker) = (0, 0);
    for name in FILES {
        let v = load(name);
        for f in frames(&v).iter().filter(|f| is_binary(f)) {
            let at = format!("{name} frame {}", f["index"]);
            let d = &f["decoded"];
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&hex::decode(d["payload_digest"].as_str().unwrap()).unwrap());
            let m = AgentMessage {
                message_type: MessageType::parse(d["message_type"].as_str().unwrap()).unwrap(),
                schema_version: u32::try_from(u64_of(&d["schema_version"])).unwrap(),
                created_date: u64_of(&d["created_date"]),
                sequence_number: d["sequence_number"].as_i64().unwrap(),
                flags: u64_of(&d["flags"]),
                message_id: Uuid::parse_str(d["message_id"].as_str().unwrap()).unwrap(),
                // Carried as recorded, so the deliberately wrong digests are reproduced too.
                payload_digest: digest,
                payload_type: PayloadType::try_from(u32::try_from(u64_of(&d["payload_type"])).unwrap())
                    .unwrap(),
                payload: Bytes::from(recorded_payload(d)),
            };
            let padding = match d["message_type_padding"].as_str().unwrap() {
                "spaces" => TypePadding::Spaces,
                "nuls" => TypePadding::Nuls,
                other => panic!("{at}: padding {other}"),
            };
            assert_eq!(hex::encode(m.encode_with_padding(padding)), f["hex"].as_str().unwrap(), "{at}");
            if from_client(f) {
                client += 1;
            } else {
                broker += 1;
            }
        }
    }
    assert_eq!((client, broker), (104, 91));
}

#[test]
fn smux_frames_decode_and_reencode() {
    let v = load("port-forwarding-smux.json");
    // One decoder per direction: smux is a byte stream inside the Output payloads.
    let mut decoders = [SmuxDecoder::default(), SmuxDecoder::default()];
    let mut seen = 0;
    for f in frames(&v).iter().filter(|f| is_binary(f)) {
        let d = &f["decoded"];
        if d["message_type"] == "acknowledge" || d["payload_type"] != 1 {
            continue;
        }
        let dec = &mut decoders[usize::from(from_client(f))];
        dec.extend(&recorded_payload(d));
        let expected = f["smux_frames"].as_array().unwrap();
        for e in expected {
            let frame = dec.next_frame().unwrap().unwrap();
            assert_eq!(frame.cmd as u64, u64_of(&e["cmd"]));
            assert_eq!(u64::from(frame.stream_id), u64_of(&e["stream_id"]));
            assert_eq!(frame.data.len() as u64, u64_of(&e["length"]));
            if let Some(t) = e["data_text"].as_str() {
                assert_eq!(&frame.data[..], t.as_bytes());
            }
            let enc = frame.encode().unwrap();
            assert_eq!(hex::encode(&enc[..8]), e["header_hex"].as_str().unwrap());
            assert_eq!(frame.stream_id, 3, "client-opened streams start at 3");
            assert_ne!(frame.cmd, Cmd::Nop, "keepalive is off for 1.2.677.0");
            seen += 1;
        }
        assert!(dec.next_frame().unwrap().is_none());
    }
    assert_eq!(seen, 5);
}

/// Both ends of one recorded session, replayed through the state machine.
struct Replay {
    /// Plays the broker/agent end: receives the plugin's frames.
    agent: DataChannel,
    /// Plays the plugin's end: receives the broker's frames.
    client: DataChannel,
    /// First-occurrence payloads by sequence number: [broker outputs, client inputs].
    payloads: [BTreeMap<i64, (PayloadType, Bytes)>; 2],
    /// How many of those have been passed to `send` on each side.
    sent: [i64; 2],
    /// Bytes `send` returned, by [side][seq], to check resends are unchanged.
    originals: [BTreeMap<i64, Bytes>; 2],
    /// Sequence numbers each side resent.
    resent: [BTreeSet<i64>; 2],
    /// Delivered data, in delivery order: [agent end, client end].
    delivered: [Vec<(i64, PayloadType, Bytes)>; 2],
    /// Ack payloads each end produced: [agent end, client end].
    acks: [BTreeSet<String>; 2],
    /// Frame indices dropped for a bad digest, by either end.
    bad_digest: BTreeSet<u64>,
    duplicates: usize,
    closed: Option<ChannelClosed>,
    next_tick_us: u64,
}

const BROKER: usize = 0;
const CLIENT: usize = 1;
/// The resend scheduler tick of both stock peers (100 ms).
const TICK_US: u64 = 100_000;

impl Replay {
    fn new(v: &Value) -> Replay {
        let mut payloads = [BTreeMap::new(), BTreeMap::new()];
        for f in frames(v).iter().filter(|f| is_binary(f)) {
            let d = &f["decoded"];
            if d["message_type"] != "input_stream_data" && d["message_type"] != "output_stream_data" {
                continue;
            }
            if d["payload_digest_matches_sha256_of_payload"] != true {
                continue;
            }
            let pt = PayloadType::try_from(u32::try_from(u64_of(&d["payload_type"])).unwrap()).unwrap();
            let side = usize::from(from_client(f));
            payloads[side]
                .entry(d["sequence_number"].as_i64().unwrap())
                .or_insert((pt, Bytes::from(recorded_payload(d))));
        }
        Replay {
            agent: DataChannel::new(ChannelConfig::new(Side::Agent)),
            client: DataChannel::new(ChannelConfig::new(Side::Client)),
            payloads,
            sent: [0, 0],
            originals: [BTreeMap::new(), BTreeMap::new()],
            resent: [BTreeSet::new(), BTreeSet::new()],
            delivered: [Vec::new(), Vec::new()],
            acks: [BTreeSet::new(), BTreeSet::new()],
            bad_digest: BTreeSet::new(),
            duplicates: 0,
            closed: None,
            next_tick_us: TICK_US,
        }
    }

    fn channel(&mut self, side: usize) -> &mut DataChannel {
        if side == BROKER {
            &mut self.agent
        } else {
            &mut self.client
        }
    }

    /// Sends, on `side`, every recorded stream message up to `seq` not sent yet, in order:
    /// the state machine must assign exactly the recorded sequence numbers.
    fn send_up_to(&mut self, side: usize, seq: i64, now: u64) {
        while self.sent[side] <= seq {
            let n = self.sent[side];
            let (pt, payload) = self.payloads[side][&n].clone();
            let frame = self.channel(side).send(pt, payload, now).unwrap();
            assert_eq!(AgentMessage::decode(&frame).unwrap().sequence_number, n);
            self.originals[side].insert(n, frame);
            self.sent[side] += 1;
        }
    }

    /// Runs both resend schedulers on their 100 ms ticks up to `now`.
    fn tick_until(&mut self, now: u64) {
        while self.next_tick_us <= now {
            let t = self.next_tick_us;
            for side in [BROKER, CLIENT] {
                if let Some(frame) = self.channel(side).poll_resend(t).unwrap() {
                    let seq = AgentMessage::decode(&frame).unwrap().sequence_number;
                    assert_eq!(frame, self.originals[side][&seq], "a resend must be unchanged");
                    self.resent[side].insert(seq);
                }
            }
            self.next_tick_us += TICK_US;
        }
    }

    fn frame(&mut self, f: &Value, now: u64) {
        let d = &f["decoded"];
        let to = if from_client(f) { BROKER } else { CLIENT };
        let sender = 1 - to;
        let seq = d["sequence_number"].as_i64().unwrap();
        if d["message_type"] == "input_stream_data" || d["message_type"] == "output_stream_data" {
            self.send_up_to(sender, seq, now);
        }
        let receipt = self.channel(to).receive(&wire(f), now);
        let stream = d["message_type"] == "input_stream_data" || d["message_type"] == "output_stream_data";
        if stream && d["payload_digest_matches_sha256_of_payload"] == true {
            // Every intact stream-data message is acked, duplicates included (README: a
            // broker must re-ack duplicates or the plugin resends for minutes).
            assert_eq!(receipt.transmit.len(), 1, "frame {} not acked once", f["index"]);
        } else {
            assert!(receipt.transmit.is_empty(), "frame {} acked", f["index"]);
        }
        for t in &receipt.transmit {
            let m = AgentMessage::decode(t).unwrap();
            self.acks[to].insert(String::from_utf8(m.payload.to_vec()).unwrap());
        }
        for e in receipt.events {
            match e {
                ChannelEvent::Data { payload_type, payload } => {
                    let n = self.delivered[to].len() as i64;
                    self.delivered[to].push((n, payload_type, payload));
                }
                ChannelEvent::Duplicate { .. } => self.duplicates += 1,
                ChannelEvent::Dropped(DropReason::BadDigest { .. }) => {
                    self.bad_digest.insert(u64_of(&f["index"]));
                }
                ChannelEvent::ChannelClosed(c) => self.closed = Some(c),
                ChannelEvent::Acknowledged { .. } => {}
                other => panic!("frame {}: unexpected {other:?}", f["index"]),
            }
        }
    }
}

fn replay(name: &str) -> (Value, Replay) {
    let v = load(name);
    let mut r = Replay::new(&v);
    // The clock: Unix-epoch microseconds, anchored at the first frame's CreatedDate; t_ms
    // (0.1 ms resolution) counts from the WebSocket accept.
    let epoch_us = u64_of(&frames(&v)[1]["decoded"]["created_date"]) * 1_000;
    r.next_tick_us = epoch_us + TICK_US;
    for f in frames(&v).iter().filter(|f| is_binary(f)) {
        let now = epoch_us + (f["t_ms"].as_f64().unwrap() * 10.0).round() as u64 * 100;
        r.tick_until(now);
        r.frame(f, now);
    }
    (v, r)
}

/// Ack payloads the recording shows one side sending (wrong-digest copies included: the
/// JSON is the same).
fn recorded_acks(v: &Value, client: bool) -> BTreeSet<String> {
    frames(v)
        .iter()
        .filter(|f| is_binary(f) && from_client(f) == client)
        .filter(|f| f["decoded"]["message_type"] == "acknowledge")
        .map(|f| f["decoded"]["payload_text"].as_str().unwrap().to_owned())
        .collect()
}

/// Sequence numbers the recording shows one side retransmitting.
fn recorded_resends(v: &Value, client: bool) -> BTreeSet<i64> {
    frames(v)
        .iter()
        .filter(|f| is_binary(f) && from_client(f) == client && f.get("duplicate_of_index").is_some())
        .map(|f| f["decoded"]["sequence_number"].as_i64().unwrap())
        .collect()
}

#[test]
fn every_session_replays_through_the_data_channel() {
    for name in FILES {
        let (v, r) = replay(name);
        for side in [BROKER, CLIENT] {
            // Everything the sender sent arrives once, in sequence order.
            let expected: Vec<(i64, PayloadType, Bytes)> =
                r.payloads[side].iter().map(|(s, (pt, p))| (*s, *pt, p.clone())).collect();
            assert_eq!(r.delivered[1 - side], expected, "{name}: delivery to side {}", 1 - side);
            // We only ever resend what the recorded peer also had to resend.
            assert!(
                r.resent[side].is_subset(&recorded_resends(&v, side == CLIENT)),
                "{name}: side {side} resent {:?}",
                r.resent[side]
            );
        }
        // Our acks are, byte for byte, the JSON the stock plugin sent (and the fake's).
        assert_eq!(r.acks[CLIENT], recorded_acks(&v, true), "{name}: client acks");
        assert_eq!(r.acks[BROKER], recorded_acks(&v, false), "{name}: broker acks");
        let recorded_close =
            frames(&v).iter().any(|f| is_binary(f) && f["decoded"]["message_type"] == "channel_closed");
        match &r.closed {
            Some(c) => assert_eq!(c.session_id, v["session_id"].as_str().unwrap()),
            None => {
                // The port-forwarding session ends with the plugin's Flag TerminateSession.
                assert!(!recorded_close, "{name}: channel_closed not reported");
                let (_, pt, p) = r.delivered[BROKER].last().unwrap();
                assert_eq!(*pt, PayloadType::Flag);
                assert_eq!(Flag::decode(p).unwrap(), Flag::TerminateSession);
            }
        }
        if name != "edge-cases.json" {
            assert!(r.bad_digest.is_empty() && r.duplicates == 0, "{name}");
            assert!(r.resent[CLIENT].is_empty(), "{name}: the fake acked everything in time");
        }
    }
}

#[test]
fn edge_cases_replay_as_the_plugin_behaved() {
    let (v, r) = replay("edge-cases.json");
    // D2 (frames 28, 29) and D6 (frame 42): wrong digests dropped without ack.
    assert_eq!(r.bad_digest, BTreeSet::from([28, 29, 42]));
    // D1 (seq 2 withheld 1.5 s) and D6 (seq 3's ack broken): the client end resends both.
    assert_eq!(r.resent[CLIENT], BTreeSet::from([2, 3]));
    assert_eq!(recorded_resends(&v, true), BTreeSet::from([2, 3]));
    // The D1 round trip of ~1.5 s drives the RTO to its 1 s cap, as the plugin's ~1.0 s
    // first D6 retransmission shows.
    assert_eq!(r.client.rto_us(), 1_000_000);
    // D3 (frame 32, already delivered) is re-acked and not delivered again; the D1
    // retransmissions (frames 12–24) are duplicates for the agent end.
    assert_eq!(r.duplicates, 1 + 13 + 8);
    // D4: "[A first]" before "[B second]"; D5: the NUL-padded frame is delivered.
    let texts: Vec<&[u8]> = r.delivered[CLIENT].iter().map(|(_, _, p)| &p[..]).collect();
    let a = texts.iter().position(|t| *t == b"[A first]\r\n").unwrap();
    assert_eq!(texts[a + 1], b"[B second]\r\n");
    assert_eq!(texts[a + 2], b"[nul-padded type]\r\n");
    assert_eq!(texts.iter().filter(|t| t.starts_with(b"digest-test")).count(), 1, "D2: printed exactly once");
    assert_eq!(r.agent.unacknowledged() + r.client.unacknowledged(), 0);
    assert_eq!(r.closed.unwrap().output, "Session terminated by the golden-vector test broker.");
}
