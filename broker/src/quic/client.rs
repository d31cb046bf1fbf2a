//! A CLI's QUIC connection as the session core's [`ClientLink`].

use std::net::SocketAddr;

use crate::session::link::{client_stream, BoxFuture, ClientLink, ClientStream};

/// A client's QUIC connection.
pub(super) struct QuicClient(pub(super) quinn::Connection);

impl ClientLink for QuicClient {
    fn remote(&self) -> SocketAddr {
        self.0.remote_address()
    }

    fn accept_stream(&self) -> BoxFuture<'_, Result<ClientStream, String>> {
        Box::pin(async move {
            let (send, recv) = self.0.accept_bi().await.map_err(|e| e.to_string())?;
            Ok(client_stream(recv, send))
        })
    }

    fn admitted(&self) {
        super::admitted(&self.0);
    }

    fn lost(&self) -> bool {
        // Timed out or reset: the network failed, the client did not leave.
        matches!(
            self.0.close_reason(),
            Some(quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset)
        )
    }

    fn close(&self, reason: &str) {
        let stats = self.0.stats();
        tracing::debug!(
            remote = %self.0.remote_address(), mtu = stats.path.current_mtu, rtt_us = stats.path.rtt.as_micros() as u64,
            lost_packets = stats.path.lost_packets, congestion_events = stats.path.congestion_events, "client link stats"
        );
        self.0.close(0u32.into(), reason.as_bytes());
    }

    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.0.closed().await;
        })
    }
}
