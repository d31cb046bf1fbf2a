//! The sans-IO data-channel state machine (spec §3.6–§3.7): in-order exactly-once delivery,
//! acknowledgements, the bounded retransmit buffer and the TCP-style RTO.
//!
//! The WebSocket edge owns the socket and the clock. It feeds every received binary frame to
//! [`DataChannel::receive`], sends the returned frames, acts on the returned events; it
//! calls [`DataChannel::send`] for outgoing stream data and [`DataChannel::poll_resend`] when
//! [`DataChannel::next_resend_at_us`] is due. Time is integer microseconds since the Unix
//! epoch (CreatedDate is derived from it), passed in by the caller.
//!
//! Deliberate differences from the stock peers, each safer for a broker:
//! * duplicates (seq below the expected one) are re-acknowledged on both sides, as the agent
//!   does: the plugin can lose an ack and would otherwise resend for minutes;
//! * an out-of-order message that does not fit the bounded buffer is dropped **without** ack
//!   (the stock peers ack it first, then may fail to store it and lose it);
//! * a full retransmit buffer refuses the send ([`SsmError::RetransmitBufferFull`]) instead of
//!   dropping the oldest or the new message, so the edge applies back-pressure;
//! * the head message is resent once per RTO, not on every 100 ms tick after the RTO
//!   elapsed (the plugin's quirk).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use uuid::Uuid;

use super::message::{
    AgentMessage, MessageType, PayloadType, DEFAULT_MAX_PAYLOAD_LEN, FLAGS_ACKNOWLEDGE, FLAGS_SYN,
};
use super::payload::{AcknowledgeContent, ChannelClosed};
use super::SsmError;

/// Initial RTT estimate (100 ms).
pub const INITIAL_RTT_US: u64 = 100_000;
/// Initial retransmission timeout (200 ms).
pub const INITIAL_RTO_US: u64 = 200_000;
/// Lower bound of the RTO's variance term: the 10 ms clock granularity.
pub const CLOCK_GRANULARITY_US: u64 = 10_000;
/// Upper bound of the RTO (1 s).
pub const MAX_RTO_US: u64 = 1_000_000;
/// Largest RTT sample used (1 h): keeps the integer estimator far from overflow.
const MAX_RTT_SAMPLE_US: u64 = 3_600_000_000;
/// Resends of the head message after which the plugin gives up (~5 min at its 100 ms tick).
pub const DEFAULT_RESEND_LIMIT: u32 = 3_000;
/// The plugin's incoming and outgoing buffer capacity.
pub const DEFAULT_BUFFER_CAPACITY: usize = 10_000;

/// Which end of the data channel this state machine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agent's end (what the broker edge plays towards the plugin): receives
    /// `input_stream_data`, sends `output_stream_data`, Flags 1 on sequence 0.
    Agent,
    /// The client's end: receives `output_stream_data`, sends `input_stream_data`, Flags 0.
    Client,
}

impl Side {
    /// MessageType of the stream data this side sends.
    pub fn outgoing_type(self) -> MessageType {
        match self {
            Side::Agent => MessageType::OutputStreamData,
            Side::Client => MessageType::InputStreamData,
        }
    }

    /// MessageType of the stream data this side receives.
    pub fn incoming_type(self) -> MessageType {
        match self {
            Side::Agent => MessageType::InputStreamData,
            Side::Client => MessageType::OutputStreamData,
        }
    }
}

/// Bounds and role of a [`DataChannel`].
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Which end we play.
    pub side: Side,
    /// Most out-of-order messages held, and how far ahead of the expected sequence number
    /// a message may be.
    pub incoming_capacity: usize,
    /// Most unacknowledged outgoing messages.
    pub outgoing_capacity: usize,
    /// Largest payload accepted or sent.
    pub max_payload_len: usize,
    /// Resends of one head message before [`SsmError::ResendLimit`].
    pub resend_limit: u32,
}

impl ChannelConfig {
    /// The spec's defaults (plugin-sized buffers) for the given side.
    pub fn new(side: Side) -> ChannelConfig {
        ChannelConfig {
            side,
            incoming_capacity: DEFAULT_BUFFER_CAPACITY,
            outgoing_capacity: DEFAULT_BUFFER_CAPACITY,
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
            resend_limit: DEFAULT_RESEND_LIMIT,
        }
    }
}

/// Why a received frame was dropped without acknowledgement.
#[derive(Debug)]
pub enum DropReason {
    /// The frame does not decode.
    Malformed(SsmError),
    /// PayloadDigest is not the SHA-256 of the payload (the peer will resend).
    BadDigest {
        /// MessageType of the dropped message.
        message_type: MessageType,
        /// Its SequenceNumber.
        sequence_number: i64,
    },
    /// Stream data of the kind this side sends, not receives.
    UnexpectedType(MessageType),
    /// Out-of-order message beyond the incoming window or with the buffer full.
    OutOfWindow {
        /// Its SequenceNumber.
        sequence_number: i64,
    },
    /// The in-order message arrived while the edge had no room to take it.
    NotReady {
        /// Its SequenceNumber.
        sequence_number: i64,
    },
    /// An acknowledge payload that does not parse.
    BadAcknowledge(SsmError),
    /// An acknowledgement for no message in the retransmit buffer (e.g. a second ack).
    UnmatchedAcknowledge {
        /// The acknowledged SequenceNumber.
        sequence_number: i64,
    },
}

/// Something the edge must act on after [`DataChannel::receive`].
#[derive(Debug)]
pub enum ChannelEvent {
    /// Stream data, delivered in sequence order and exactly once.
    Data {
        /// What the payload is.
        payload_type: PayloadType,
        /// The payload.
        payload: Bytes,
    },
    /// A stream-data message already delivered arrived again (re-acknowledged).
    Duplicate {
        /// Its SequenceNumber.
        sequence_number: i64,
    },
    /// The peer acknowledged one of our messages; it left the retransmit buffer.
    Acknowledged {
        /// Its SequenceNumber.
        sequence_number: i64,
        /// Round-trip sample in microseconds (now − first send).
        rtt_sample_us: u64,
    },
    /// The service closed the channel (`channel_closed`).
    ChannelClosed(ChannelClosed),
    /// `pause_publication`: stop sending and resending until resumed.
    PublicationPaused,
    /// `start_publication`: sending may resume.
    PublicationStarted,
    /// Any other valid message (e.g. `agent_session_state`), for the edge to judge.
    Other(AgentMessage),
    /// The frame was dropped without acknowledgement.
    Dropped(DropReason),
}

/// What [`DataChannel::receive`] produced: frames to send back, then events.
#[derive(Debug, Default)]
pub struct Receipt {
    /// Encoded frames to send to the peer (acknowledgements), in order.
    pub transmit: Vec<Bytes>,
    /// Events in the order they happened.
    pub events: Vec<ChannelEvent>,
}

#[derive(Debug)]
struct Outgoing {
    sequence_number: i64,
    frame: Bytes,
    first_sent_us: u64,
    last_sent_us: u64,
    resends: u32,
}

/// One data channel's sequencing state; survives WebSocket reconnects (resume).
#[derive(Debug)]
pub struct DataChannel {
    config: ChannelConfig,
    expected_incoming: i64,
    incoming: BTreeMap<i64, (PayloadType, Bytes)>,
    next_outgoing: i64,
    outgoing: VecDeque<Outgoing>,
    rtt_us: u64,
    rttvar_us: u64,
    rto_us: u64,
    paused: bool,
}

impl DataChannel {
    /// A fresh channel: both counters at 0, RTT 100 ms, RTO 200 ms.
    pub fn new(config: ChannelConfig) -> DataChannel {
        DataChannel {
            config,
            expected_incoming: 0,
            incoming: BTreeMap::new(),
            next_outgoing: 0,
            outgoing: VecDeque::new(),
            rtt_us: INITIAL_RTT_US,
            rttvar_us: 0,
            rto_us: INITIAL_RTO_US,
            paused: false,
        }
    }

    /// The current retransmission timeout in microseconds.
    pub fn rto_us(&self) -> u64 {
        self.rto_us
    }

    /// The next incoming sequence number to be delivered.
    pub fn expected_sequence_number(&self) -> i64 {
        self.expected_incoming
    }

    /// The sequence number the next [`Self::send`] will use.
    pub fn next_sequence_number(&self) -> i64 {
        self.next_outgoing
    }

    /// Outgoing messages not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.outgoing.len()
    }

    /// Out-of-order messages held for later delivery.
    pub fn buffered_incoming(&self) -> usize {
        self.incoming.len()
    }

    /// True while a `pause_publication` is in effect.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Handles one received binary frame, delivering as much as is in order.
    pub fn receive(&mut self, frame: &[u8], now_us: u64) -> Receipt {
        self.receive_with_room(frame, now_us, usize::MAX)
    }

    /// Handles one received binary frame, delivering at most `room` messages: with no room
    /// the in-order message is dropped unacknowledged (the peer resends it), and in-order
    /// successors stay held for [`Self::drain`]. This is the edge's back-pressure.
    pub fn receive_with_room(&mut self, frame: &[u8], now_us: u64, room: usize) -> Receipt {
        let mut r = Receipt::default();
        let msg = match AgentMessage::decode_with_limit(frame, self.config.max_payload_len) {
            Ok(m) => m,
            Err(e) => {
                r.events.push(ChannelEvent::Dropped(DropReason::Malformed(e)));
                return r;
            }
        };
        let publication =
            matches!(msg.message_type, MessageType::StartPublication | MessageType::PausePublication);
        // The plugin checks the digest only for non-empty payloads, and never for the
        // publication messages (§3.2).
        if !publication && !msg.payload.is_empty() && !msg.digest_matches() {
            r.events.push(ChannelEvent::Dropped(DropReason::BadDigest {
                message_type: msg.message_type,
                sequence_number: msg.sequence_number,
            }));
            return r;
        }
        match msg.message_type {
            t if t == self.config.side.incoming_type() => {
                self.paused = false;
                self.receive_stream_data(msg, now_us, room, &mut r);
            }
            t if t.is_stream_data() => {
                r.events.push(ChannelEvent::Dropped(DropReason::UnexpectedType(t)));
            }
            MessageType::Acknowledge => {
                self.paused = false;
                self.receive_acknowledge(&msg, now_us, &mut r);
            }
            MessageType::ChannelClosed => match serde_json::from_slice::<ChannelClosed>(&msg.payload) {
                Ok(c) => r.events.push(ChannelEvent::ChannelClosed(c)),
                Err(e) => r.events.push(ChannelEvent::Dropped(DropReason::Malformed(e.into()))),
            },
            MessageType::PausePublication => {
                self.paused = true;
                r.events.push(ChannelEvent::PublicationPaused);
            }
            MessageType::StartPublication => {
                self.paused = false;
                r.events.push(ChannelEvent::PublicationStarted);
            }
            _ => r.events.push(ChannelEvent::Other(msg)),
        }
        r
    }

    fn receive_stream_data(&mut self, msg: AgentMessage, now_us: u64, room: usize, r: &mut Receipt) {
        let seq = msg.sequence_number;
        let mut room = room;
        if seq < self.expected_incoming || self.incoming.contains_key(&seq) {
            // Already delivered or held: re-ack, or the sender keeps resending (the agent's
            // rule; the plugin can lose an ack that races its own bookkeeping).
            r.transmit.push(self.acknowledgement(&msg, now_us));
            r.events.push(ChannelEvent::Duplicate { sequence_number: seq });
        } else if seq == self.expected_incoming {
            if room == 0 {
                // The agent's "handler not ready" rule: no ack, so the peer resends later.
                r.events.push(ChannelEvent::Dropped(DropReason::NotReady { sequence_number: seq }));
                return;
            }
            r.transmit.push(self.acknowledgement(&msg, now_us));
            r.events.push(ChannelEvent::Data { payload_type: msg.payload_type, payload: msg.payload });
            self.expected_incoming += 1;
            room -= 1;
        } else {
            self.hold_out_of_order(msg, now_us, r);
        }
        r.events.extend(self.drain(room));
    }

    /// Delivers up to `room` held messages that have become in-order (after a receive with
    /// limited room, or never when room was unlimited).
    pub fn drain(&mut self, room: usize) -> Vec<ChannelEvent> {
        let mut out = Vec::new();
        while out.len() < room {
            let Some((payload_type, payload)) = self.incoming.remove(&self.expected_incoming) else {
                break;
            };
            out.push(ChannelEvent::Data { payload_type, payload });
            self.expected_incoming += 1;
        }
        out
    }

    /// Held messages that are deliverable now by [`Self::drain`].
    pub fn deliverable(&self) -> usize {
        (self.expected_incoming..).take_while(|s| self.incoming.contains_key(s)).count()
    }

    fn hold_out_of_order(&mut self, msg: AgentMessage, now_us: u64, r: &mut Receipt) {
        let seq = msg.sequence_number;
        let ahead = u64::try_from(seq - self.expected_incoming).unwrap_or(u64::MAX);
        let window = u64::try_from(self.config.incoming_capacity).unwrap_or(u64::MAX);
        if ahead > window || self.incoming.len() >= self.config.incoming_capacity {
            // Not acked, so the sender keeps it and resends once we have caught up.
            r.events.push(ChannelEvent::Dropped(DropReason::OutOfWindow { sequence_number: seq }));
            return;
        }
        r.transmit.push(self.acknowledgement(&msg, now_us));
        self.incoming.insert(seq, (msg.payload_type, msg.payload));
    }

    fn receive_acknowledge(&mut self, msg: &AgentMessage, now_us: u64, r: &mut Receipt) {
        let ack: AcknowledgeContent = match serde_json::from_slice(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                r.events.push(ChannelEvent::Dropped(DropReason::BadAcknowledge(e.into())));
                return;
            }
        };
        let seq = ack.acknowledged_message_sequence_number;
        // Matching is by sequence number only (§3.6).
        let Some(pos) = self.outgoing.iter().position(|o| o.sequence_number == seq) else {
            r.events.push(ChannelEvent::Dropped(DropReason::UnmatchedAcknowledge { sequence_number: seq }));
            return;
        };
        let Some(acked) = self.outgoing.remove(pos) else {
            return;
        };
        let sample = now_us.saturating_sub(acked.first_sent_us);
        self.update_rto(sample);
        r.events.push(ChannelEvent::Acknowledged { sequence_number: seq, rtt_sample_us: sample });
    }

    /// RFC 6298-style update with α = 1/8, β = 1/4 (§3.7), in integer microseconds.
    fn update_rto(&mut self, sample_us: u64) {
        // Clamped so a clock jump cannot overflow the products below.
        let sample_us = sample_us.min(MAX_RTT_SAMPLE_US);
        let err = self.rtt_us.abs_diff(sample_us);
        self.rttvar_us = (3 * self.rttvar_us + err) / 4;
        self.rtt_us = (7 * self.rtt_us + sample_us) / 8;
        let rto = self.rtt_us.saturating_add(CLOCK_GRANULARITY_US.max(4 * self.rttvar_us));
        self.rto_us = rto.min(MAX_RTO_US);
    }

    fn acknowledgement(&self, msg: &AgentMessage, now_us: u64) -> Bytes {
        let content = AcknowledgeContent::for_message(msg.message_type, msg.message_id, msg.sequence_number);
        // Serialising a struct of strings, integers and a bool cannot fail.
        let payload = serde_json::to_vec(&content).unwrap_or_default();
        AgentMessage::new(
            MessageType::Acknowledge,
            created_date(now_us),
            0,
            FLAGS_ACKNOWLEDGE,
            Uuid::new_v4(),
            PayloadType::Undefined,
            Bytes::from(payload),
        )
        .encode()
    }

    /// Sends stream data: assigns the next sequence number (one counter for every payload
    /// type), keeps the frame for resending until acknowledged and returns it to transmit.
    pub fn send(
        &mut self,
        payload_type: PayloadType,
        payload: Bytes,
        now_us: u64,
    ) -> Result<Bytes, SsmError> {
        if payload.len() > self.config.max_payload_len {
            return Err(SsmError::PayloadTooLong { len: payload.len(), max: self.config.max_payload_len });
        }
        if self.outgoing.len() >= self.config.outgoing_capacity {
            return Err(SsmError::RetransmitBufferFull(self.outgoing.len()));
        }
        let seq = self.next_outgoing;
        let flags = match (self.config.side, seq) {
            (Side::Agent, 0) => FLAGS_SYN,
            _ => 0,
        };
        let frame = AgentMessage::new(
            self.config.side.outgoing_type(),
            created_date(now_us),
            seq,
            flags,
            Uuid::new_v4(),
            payload_type,
            payload,
        )
        .encode();
        self.next_outgoing += 1;
        self.outgoing.push_back(Outgoing {
            sequence_number: seq,
            frame: frame.clone(),
            first_sent_us: now_us,
            last_sent_us: now_us,
            resends: 0,
        });
        Ok(frame)
    }

    /// An unsequenced message (`channel_closed`, publication control, ...): sequence 0,
    /// flags 0, not kept for resending.
    pub fn unsequenced(message_type: MessageType, payload: Bytes, now_us: u64) -> Bytes {
        AgentMessage::new(
            message_type,
            created_date(now_us),
            0,
            0,
            Uuid::new_v4(),
            PayloadType::Undefined,
            payload,
        )
        .encode()
    }

    /// When the head message is next due for resending, if any (none while paused).
    pub fn next_resend_at_us(&self) -> Option<u64> {
        if self.paused {
            return None;
        }
        self.outgoing.front().map(|o| o.last_sent_us.saturating_add(self.rto_us))
    }

    /// The head (oldest unacknowledged) message if its RTO has elapsed, unchanged (same
    /// MessageId, sequence number and CreatedDate); only the head is ever resent.
    pub fn poll_resend(&mut self, now_us: u64) -> Result<Option<Bytes>, SsmError> {
        let Some(due) = self.next_resend_at_us() else {
            return Ok(None);
        };
        if now_us < due {
            return Ok(None);
        }
        let limit = self.config.resend_limit;
        let Some(head) = self.outgoing.front_mut() else {
            return Ok(None);
        };
        if head.resends >= limit {
            return Err(SsmError::ResendLimit(head.sequence_number));
        }
        head.resends += 1;
        head.last_sent_us = now_us;
        Ok(Some(head.frame.clone()))
    }
}

/// CreatedDate (epoch ms) for a clock reading; never 0, which every receiver rejects.
fn created_date(now_us: u64) -> u64 {
    (now_us / 1_000).max(1)
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
