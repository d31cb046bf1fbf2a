//! Unit tests of the data-channel rules, one per rule of spec §3.6–§3.7.

use super::*;
use crate::ssm::message::{AgentMessage, MessageType, PayloadType};

const T0: u64 = 1_795_698_986_305_000;

fn agent() -> DataChannel {
    DataChannel::new(ChannelConfig::new(Side::Agent))
}

/// A client → agent stream-data frame as the plugin would send it.
fn input(seq: i64, payload: &'static [u8]) -> Bytes {
    AgentMessage::new(
        MessageType::InputStreamData,
        T0 / 1000,
        seq,
        0,
        Uuid::from_u128(0x4000_0000_0000_4000_8000_0000_0000_0000 | seq as u128),
        PayloadType::Output,
        Bytes::from_static(payload),
    )
    .encode()
}

/// An acknowledge frame from the peer for one of our sequence numbers.
fn ack_for(seq: i64) -> Bytes {
    let c = AcknowledgeContent::for_message(MessageType::OutputStreamData, Uuid::nil(), seq);
    AgentMessage::new(
        MessageType::Acknowledge,
        T0 / 1000,
        0,
        3,
        Uuid::new_v4(),
        PayloadType::Undefined,
        Bytes::from(serde_json::to_vec(&c).unwrap()),
    )
    .encode()
}

fn acked(frame: &Bytes) -> AcknowledgeContent {
    let m = AgentMessage::decode(frame).unwrap();
    assert_eq!(m.message_type, MessageType::Acknowledge);
    assert_eq!((m.sequence_number, m.flags), (0, 3));
    assert_eq!(m.payload_type, PayloadType::Undefined);
    assert!(m.digest_matches());
    serde_json::from_slice(&m.payload).unwrap()
}

fn data(r: &Receipt) -> Vec<Bytes> {
    r.events
        .iter()
        .filter_map(|e| match e {
            ChannelEvent::Data { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn in_order_messages_are_delivered_and_acked() {
    let mut ch = agent();
    let r = ch.receive(&input(0, b"l"), T0);
    assert_eq!(data(&r), vec![Bytes::from_static(b"l")]);
    assert_eq!(r.transmit.len(), 1);
    let a = acked(&r.transmit[0]);
    assert_eq!(a.acknowledged_message_type, "input_stream_data");
    assert_eq!(a.acknowledged_message_sequence_number, 0);
    assert_eq!(a.acknowledged_message_id, AgentMessage::decode(&input(0, b"l")).unwrap().message_id);
    assert_eq!(ch.expected_sequence_number(), 1);
}

#[test]
fn duplicates_are_reacked_and_not_redelivered() {
    let mut ch = agent();
    ch.receive(&input(0, b"x"), T0);
    let r = ch.receive(&input(0, b"x"), T0 + 1);
    assert!(data(&r).is_empty());
    assert_eq!(acked(&r.transmit[0]).acknowledged_message_sequence_number, 0);
    assert!(matches!(r.events[..], [ChannelEvent::Duplicate { sequence_number: 0 }]));
}

#[test]
fn out_of_order_is_acked_buffered_and_delivered_in_order() {
    let mut ch = agent();
    let r = ch.receive(&input(1, b"B"), T0);
    assert!(data(&r).is_empty());
    assert_eq!(acked(&r.transmit[0]).acknowledged_message_sequence_number, 1);
    assert_eq!(ch.buffered_incoming(), 1);
    // The same early message again: re-acked, held once.
    let r = ch.receive(&input(1, b"B"), T0);
    assert_eq!(r.transmit.len(), 1);
    assert_eq!(ch.buffered_incoming(), 1);
    let r = ch.receive(&input(0, b"A"), T0);
    assert_eq!(data(&r), vec![Bytes::from_static(b"A"), Bytes::from_static(b"B")]);
    assert_eq!(ch.expected_sequence_number(), 2);
    assert_eq!(ch.buffered_incoming(), 0);
}

#[test]
fn out_of_window_is_dropped_without_ack() {
    let mut cfg = ChannelConfig::new(Side::Agent);
    cfg.incoming_capacity = 2;
    let mut ch = DataChannel::new(cfg);
    let r = ch.receive(&input(3, b"far"), T0);
    assert!(r.transmit.is_empty());
    assert!(matches!(r.events[..], [ChannelEvent::Dropped(DropReason::OutOfWindow { sequence_number: 3 })]));
    // Within the window, but the buffer is full.
    let mut cfg = ChannelConfig::new(Side::Agent);
    cfg.incoming_capacity = 1;
    let mut small = DataChannel::new(cfg);
    assert_eq!(small.receive(&input(1, b"1"), T0).transmit.len(), 1);
    let r = small.receive(&input(2, b"2"), T0);
    assert!(r.transmit.is_empty());
    assert!(matches!(r.events[..], [ChannelEvent::Dropped(DropReason::OutOfWindow { sequence_number: 2 })]));
}

#[test]
fn wrong_digest_is_dropped_without_ack_then_the_good_copy_is_delivered() {
    let mut ch = agent();
    let mut bad = AgentMessage::decode(&input(0, b"digest")).unwrap();
    bad.payload_digest[31] ^= 0xff;
    let r = ch.receive(&bad.encode(), T0);
    assert!(r.transmit.is_empty());
    assert!(matches!(
        r.events[..],
        [ChannelEvent::Dropped(DropReason::BadDigest { sequence_number: 0, .. })]
    ));
    assert_eq!(ch.expected_sequence_number(), 0);
    let r = ch.receive(&input(0, b"digest"), T0);
    assert_eq!(data(&r), vec![Bytes::from_static(b"digest")]);
}

#[test]
fn malformed_and_wrong_direction_frames_are_dropped() {
    let mut ch = agent();
    let r = ch.receive(b"\x00\x00\x00\x74short", T0);
    assert!(matches!(r.events[..], [ChannelEvent::Dropped(DropReason::Malformed(_))]));
    let mut own = AgentMessage::decode(&input(0, b"x")).unwrap();
    own.message_type = MessageType::OutputStreamData;
    let r = ch.receive(&own.encode(), T0);
    assert!(r.transmit.is_empty());
    assert!(matches!(
        r.events[..],
        [ChannelEvent::Dropped(DropReason::UnexpectedType(MessageType::OutputStreamData))]
    ));
}

#[test]
fn send_uses_one_counter_and_the_agent_flags() {
    let mut ch = agent();
    let a = ch.send(PayloadType::HandshakeRequest, Bytes::from_static(b"{}"), T0).unwrap();
    let b = ch.send(PayloadType::Output, Bytes::from_static(b"out"), T0).unwrap();
    let c = ch.send(PayloadType::Flag, Bytes::from_static(&[0, 0, 0, 3]), T0).unwrap();
    let seqs: Vec<(i64, u64)> = [a, b, c]
        .iter()
        .map(|f| AgentMessage::decode(f).unwrap())
        .map(|m| {
            assert_eq!(m.message_type, MessageType::OutputStreamData);
            assert_eq!(m.created_date, T0 / 1000);
            (m.sequence_number, m.flags)
        })
        .collect();
    assert_eq!(seqs, vec![(0, 1), (1, 0), (2, 0)]);
    assert_eq!(ch.unacknowledged(), 3);

    let mut client = DataChannel::new(ChannelConfig::new(Side::Client));
    let f = client.send(PayloadType::Size, Bytes::from_static(b"{}"), T0).unwrap();
    let m = AgentMessage::decode(&f).unwrap();
    assert_eq!((m.message_type, m.flags), (MessageType::InputStreamData, 0));
}

#[test]
fn acknowledge_releases_by_sequence_number_and_updates_rto() {
    let mut ch = agent();
    ch.send(PayloadType::Output, Bytes::from_static(b"0"), T0).unwrap();
    ch.send(PayloadType::Output, Bytes::from_static(b"1"), T0).unwrap();
    let r = ch.receive(&ack_for(1), T0 + 40_000);
    assert!(matches!(
        r.events[..],
        [ChannelEvent::Acknowledged { sequence_number: 1, rtt_sample_us: 40_000 }]
    ));
    assert!(r.transmit.is_empty(), "acks are never acked");
    assert_eq!(ch.unacknowledged(), 1);
    // RTTVAR = 0·3/4 + |100 ms − 40 ms|/4 = 15 ms; RTT = (7·100 + 40)/8 = 92.5 ms;
    // RTO = 92.5 + max(10, 60) = 152.5 ms.
    assert_eq!(ch.rto_us(), 152_500);
    let r = ch.receive(&ack_for(1), T0 + 50_000);
    assert!(matches!(
        r.events[..],
        [ChannelEvent::Dropped(DropReason::UnmatchedAcknowledge { sequence_number: 1 })]
    ));
}

#[test]
fn rto_is_capped_at_one_second() {
    let mut ch = agent();
    ch.send(PayloadType::Output, Bytes::from_static(b"x"), T0).unwrap();
    ch.receive(&ack_for(0), T0 + 1_515_000);
    assert_eq!(ch.rto_us(), MAX_RTO_US);
}

#[test]
fn ack_with_wrong_digest_does_not_release() {
    let mut ch = agent();
    ch.send(PayloadType::Output, Bytes::from_static(b"y"), T0).unwrap();
    let mut bad = AgentMessage::decode(&ack_for(0)).unwrap();
    bad.payload_digest[0] ^= 1;
    let r = ch.receive(&bad.encode(), T0 + 1_000);
    assert!(matches!(r.events[..], [ChannelEvent::Dropped(DropReason::BadDigest { .. })]));
    assert_eq!(ch.unacknowledged(), 1);
}

#[test]
fn only_the_head_is_resent_unchanged_once_per_rto() {
    let mut ch = agent();
    let first = ch.send(PayloadType::Output, Bytes::from_static(b"a"), T0).unwrap();
    ch.send(PayloadType::Output, Bytes::from_static(b"b"), T0).unwrap();
    assert_eq!(ch.next_resend_at_us(), Some(T0 + INITIAL_RTO_US));
    assert_eq!(ch.poll_resend(T0 + INITIAL_RTO_US - 1).unwrap(), None);
    assert_eq!(ch.poll_resend(T0 + INITIAL_RTO_US).unwrap(), Some(first.clone()));
    // Not again on the next 100 ms tick: the timer restarted.
    assert_eq!(ch.poll_resend(T0 + INITIAL_RTO_US + 100_000).unwrap(), None);
    assert_eq!(ch.poll_resend(T0 + 2 * INITIAL_RTO_US).unwrap(), Some(first));
    ch.receive(&ack_for(0), T0 + 2 * INITIAL_RTO_US + 1);
    let rto = ch.rto_us();
    let next = ch.poll_resend(T0 + 2 * INITIAL_RTO_US + rto).unwrap().unwrap();
    assert_eq!(AgentMessage::decode(&next).unwrap().sequence_number, 1);
    ch.receive(&ack_for(1), T0 + 3 * INITIAL_RTO_US);
    assert_eq!(ch.next_resend_at_us(), None);
    assert_eq!(ch.poll_resend(u64::MAX).unwrap(), None);
}

#[test]
fn resend_limit_ends_the_channel() {
    let mut cfg = ChannelConfig::new(Side::Agent);
    cfg.resend_limit = 2;
    let mut ch = DataChannel::new(cfg);
    ch.send(PayloadType::Output, Bytes::from_static(b"a"), 0).unwrap();
    assert!(ch.poll_resend(1_000_000).unwrap().is_some());
    assert!(ch.poll_resend(2_000_000).unwrap().is_some());
    assert!(matches!(ch.poll_resend(3_000_000), Err(SsmError::ResendLimit(0))));
}

#[test]
fn full_retransmit_buffer_and_oversized_payloads_are_refused() {
    let mut cfg = ChannelConfig::new(Side::Agent);
    cfg.max_payload_len = 4;
    assert!(matches!(
        DataChannel::new(cfg).send(PayloadType::Output, Bytes::from_static(b"12345"), T0),
        Err(SsmError::PayloadTooLong { len: 5, max: 4 })
    ));
    let mut cfg = ChannelConfig::new(Side::Agent);
    cfg.outgoing_capacity = 1;
    let mut ch = DataChannel::new(cfg);
    ch.send(PayloadType::Output, Bytes::from_static(b"1"), T0).unwrap();
    assert!(matches!(
        ch.send(PayloadType::Output, Bytes::from_static(b"2"), T0),
        Err(SsmError::RetransmitBufferFull(1))
    ));
    // A refused send does not consume a sequence number.
    assert_eq!(ch.next_sequence_number(), 1);
    ch.receive(&ack_for(0), T0 + 1);
    let f = ch.send(PayloadType::Output, Bytes::from_static(b"2"), T0).unwrap();
    assert_eq!(AgentMessage::decode(&f).unwrap().sequence_number, 1);
}

#[test]
fn pause_publication_stops_resends_until_traffic_or_start() {
    let mut ch = agent();
    ch.send(PayloadType::Output, Bytes::from_static(b"a"), T0).unwrap();
    let pause = DataChannel::unsequenced(MessageType::PausePublication, Bytes::new(), T0);
    let r = ch.receive(&pause, T0);
    assert!(matches!(r.events[..], [ChannelEvent::PublicationPaused]));
    assert!(ch.is_paused());
    assert_eq!(ch.poll_resend(T0 + 10 * MAX_RTO_US).unwrap(), None);
    let start = DataChannel::unsequenced(MessageType::StartPublication, Bytes::new(), T0);
    assert!(matches!(ch.receive(&start, T0).events[..], [ChannelEvent::PublicationStarted]));
    assert!(ch.poll_resend(T0 + 10 * MAX_RTO_US).unwrap().is_some());
    ch.receive(&pause, T0);
    ch.receive(&input(0, b"k"), T0);
    assert!(!ch.is_paused(), "incoming stream data resumes publication");
}

#[test]
fn channel_closed_is_reported_and_other_types_are_passed_up() {
    let mut ch = DataChannel::new(ChannelConfig::new(Side::Client));
    let body = br#"{"MessageId":"14a44dbc-d15c-42f8-accb-bf4b0f1eb19f","CreatedDate":"2026-11-26T13:16:36.000Z","DestinationId":"i-0123456789abcdef0","SessionId":"alice-1","MessageType":"channel_closed","SchemaVersion":1,"Output":"bye"}"#;
    let f = DataChannel::unsequenced(MessageType::ChannelClosed, Bytes::from_static(body), T0);
    let r = ch.receive(&f, T0);
    assert!(r.transmit.is_empty(), "channel_closed is not acked");
    match &r.events[..] {
        [ChannelEvent::ChannelClosed(c)] => {
            assert_eq!((c.session_id.as_str(), c.output.as_str()), ("alice-1", "bye"))
        }
        other => panic!("{other:?}"),
    }
    let state = DataChannel::unsequenced(
        MessageType::AgentSessionState,
        Bytes::from_static(br#"{"SchemaVersion":1,"SessionState":"Connected","SessionId":"s"}"#),
        T0,
    );
    assert!(matches!(ch.receive(&state, T0).events[..], [ChannelEvent::Other(_)]));
}

#[test]
fn created_date_is_never_zero() {
    // A clock reading below 1 ms must not yield CreatedDate 0, which receivers reject.
    let mut ch = agent();
    let f = ch.send(PayloadType::Output, Bytes::from_static(b"a"), 999).unwrap();
    assert_eq!(AgentMessage::decode(&f).unwrap().created_date, 1);
    let r = ch.receive(&input(0, b"k"), 0);
    assert!(AgentMessage::decode(&r.transmit[0]).is_ok());
}

#[test]
fn absurd_clock_readings_do_not_overflow() {
    let mut ch = agent();
    ch.send(PayloadType::Output, Bytes::from_static(b"a"), 0).unwrap();
    ch.send(PayloadType::Output, Bytes::from_static(b"b"), 0).unwrap();
    ch.receive(&ack_for(0), u64::MAX);
    ch.receive(&ack_for(1), u64::MAX);
    assert_eq!(ch.rto_us(), MAX_RTO_US);
    assert!(ch.poll_resend(u64::MAX).unwrap().is_none());
}

#[test]
fn no_room_means_no_ack_and_held_messages_wait_for_drain() {
    let mut ch = agent();
    let r = ch.receive_with_room(&input(0, b"0"), T0, 0);
    assert!(r.transmit.is_empty());
    assert!(matches!(r.events[..], [ChannelEvent::Dropped(DropReason::NotReady { sequence_number: 0 })]));
    assert_eq!(ch.expected_sequence_number(), 0);
    ch.receive_with_room(&input(1, b"1"), T0, 0);
    ch.receive_with_room(&input(2, b"2"), T0, 0);
    assert_eq!(ch.buffered_incoming(), 2, "out-of-order messages need no room");
    let r = ch.receive_with_room(&input(0, b"0"), T0, 2);
    assert_eq!(data(&r), vec![Bytes::from_static(b"0"), Bytes::from_static(b"1")]);
    assert_eq!(ch.deliverable(), 1);
    // A resend of the held, now in-order message: re-acked, delivered once.
    let r = ch.receive_with_room(&input(2, b"2"), T0, 1);
    assert_eq!(acked(&r.transmit[0]).acknowledged_message_sequence_number, 2);
    assert_eq!(data(&r), vec![Bytes::from_static(b"2")]);
    assert!(ch.drain(usize::MAX).is_empty());
    assert_eq!(ch.expected_sequence_number(), 3);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the arrival order, duplicates and corrupted copies, the receiver delivers
        /// exactly the contiguous prefix 0..k once each and in order, acks every message it
        /// keeps, and never acks a corrupted one.
        #[test]
        fn delivery_is_in_order_and_exactly_once(
            arrivals in proptest::collection::vec((0i64..24, any::<bool>(), 0usize..3), 0..80),
        ) {
            let mut cfg = ChannelConfig::new(Side::Agent);
            cfg.incoming_capacity = 8;
            let mut ch = DataChannel::new(cfg);
            let mut delivered = Vec::new();
            let mut good: std::collections::BTreeSet<i64> = Default::default();
            for (seq, corrupt, room) in arrivals {
                let payload = Bytes::from(seq.to_string());
                let mut m = AgentMessage::new(
                    MessageType::InputStreamData, T0 / 1000, seq, 0, Uuid::new_v4(),
                    PayloadType::Output, payload,
                );
                if corrupt {
                    m.payload_digest[0] ^= 1;
                }
                let r = ch.receive_with_room(&m.encode(), T0, room);
                prop_assert!(data(&r).len() <= room);
                if corrupt {
                    prop_assert!(r.transmit.is_empty());
                }
                for t in &r.transmit {
                    prop_assert_eq!(acked(t).acknowledged_message_sequence_number, seq);
                }
                if !r.transmit.is_empty() {
                    good.insert(seq);
                }
                delivered.extend(data(&r));
            }
            delivered.extend(ch.drain(usize::MAX).into_iter().filter_map(|e| match e {
                ChannelEvent::Data { payload, .. } => Some(payload),
                _ => None,
            }));
            let expected: Vec<Bytes> = (0..).take_while(|s| good.contains(s))
                .map(|s: i64| Bytes::from(s.to_string())).collect();
            prop_assert_eq!(&delivered, &expected);
            prop_assert_eq!(ch.expected_sequence_number(), expected.len() as i64);
        }

        /// Arbitrary bytes and mutated frames never panic the state machine.
        #[test]
        fn arbitrary_frames_never_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
            now in any::<u64>(),
        ) {
            let mut ch = agent();
            ch.send(PayloadType::Output, Bytes::from_static(b"x"), 0).unwrap();
            for base in [input(0, b"abc"), ack_for(0)] {
                let mut f = base.to_vec();
                for (at, v) in &flips {
                    if let Some(b) = f.get_mut(*at) { *b = *v; }
                }
                let _ = ch.receive(&f, now);
                let _ = ch.poll_resend(now);
            }
        }
    }
}
