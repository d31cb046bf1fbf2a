//! One agent's connection: identify it, keep its control stream (hello, heartbeats) and
//! make it reachable for sessions while it lives.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{Control, FramedStream, PeerVersion, ProtoError};
use rustls_pki_types::CertificateDer;

use super::CONTROL_FRAME_LIMIT;
use crate::app::{now_us, App};
use crate::ca::fingerprint;
use crate::store::HostInfo;

/// An agent that sends nothing (not even a heartbeat) for this long is dropped.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Application close codes on agent connections.
pub(super) mod close {
    /// The certificate is unknown, expired, superseded or its instance deregistered.
    pub(crate) const UNKNOWN_CERT: u32 = 1;
    /// The agent broke the protocol.
    pub(crate) const PROTOCOL: u32 = 3;
    /// The agent's protocol is older than this broker serves; the reason names the minimum.
    pub(crate) const TOO_OLD: u32 = 5;
}

/// Serves one agent connection until it ends.
pub(super) async fn run(app: Arc<App>, connection: quinn::Connection, cert: CertificateDer<'static>) {
    let remote = connection.remote_address();
    let presented = fingerprint(&cert);
    // The store knows each accepted certificate's notAfter; TLS checked the chain and validity
    // already, the store adds revocation (deregistration, superseded renewals).
    let instance = match app.store.instance_by_certificate(&presented, now_us()).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            tracing::warn!(%remote, "agent certificate is unknown, expired or revoked; closing");
            connection.close(close::UNKNOWN_CERT.into(), b"unknown agent certificate");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "store lookup failed");
            connection.close(0u32.into(), b"internal error");
            return;
        }
    };
    let id = instance.instance_id;
    let (send, recv) = match tokio::time::timeout(HELLO_DEADLINE, connection.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => {
            connection.close(close::PROTOCOL.into(), b"no control stream");
            return;
        }
    };
    let mut control = FramedStream::new(recv, send, CONTROL_FRAME_LIMIT);
    let (version, hello) = match control.recv_control(HELLO_DEADLINE).await {
        Ok(Control::AgentHello(h)) => (PeerVersion::unversioned(), h),
        Ok(Control::AgentHelloVersioned { version, hello }) => (version, hello),
        other => {
            tracing::warn!(instance = %id, ?other, "agent did not say hello");
            connection.close(close::PROTOCOL.into(), b"expected AgentHello");
            return;
        }
    };
    if let Err(e) = version.check("agent") {
        tracing::warn!(instance = %id, error = %e, "agent refused");
        connection.close(close::TOO_OLD.into(), e.to_string().as_bytes());
        return;
    }
    tracing::debug!(instance = %id, protocol = version.protocol, capabilities = ?version.capabilities, "agent hello");
    let host = HostInfo {
        agent_version: hello.agent_version,
        platform_type: hello.platform_type,
        platform_name: hello.platform_name,
        platform_version: hello.platform_version,
        computer_name: hello.hostname,
        ip_address: hello.ip_address,
    };
    if let Err(e) = app.store.update_instance_host(&id, &host, now_us()).await {
        tracing::error!(error = %e, "cannot record agent host info");
    }
    let run_command = version.has(airlock_proto::version::RUN_COMMAND);
    let generation = app.registry.agent_connected(&id, connection.clone(), version);
    let _counted = crate::metrics::agent_connected();
    // A deregistration between the lookup above and this point found no live link to
    // close; it has marked the store by now, so looking again closes the gap.
    if !matches!(app.store.instance_by_certificate(&presented, now_us()).await, Ok(Some(_))) {
        connection.close(close::UNKNOWN_CERT.into(), b"unknown agent certificate");
        app.registry.agent_disconnected(&id, generation);
        return;
    }
    tracing::info!(instance = %id, %remote, "agent online");
    let mut outbound = app.commands.agent_online(&id, generation, run_command);

    let why = loop {
        // Run Command messages for the agent go out between the agent's own messages.
        let incoming = tokio::select! {
            msg = control.recv_control(SILENCE_LIMIT) => msg,
            Some(out) = next_outbound(&mut outbound) => {
                if control.send_control(&out).await.is_err() {
                    break "control stream failed".to_owned();
                }
                continue;
            }
        };
        match incoming {
            Ok(Control::Heartbeat { seq }) => {
                if let Err(e) = app.store.touch_instance(&id, now_us()).await {
                    tracing::error!(error = %e, "cannot record heartbeat");
                }
                if control.send_control(&Control::Heartbeat { seq }).await.is_err() {
                    break "control stream failed".to_owned();
                }
            }
            Ok(Control::RenewCertificate { csr }) => {
                let answer = renew(&app, &id, &presented, &csr).await;
                if control.send_control(&answer).await.is_err() {
                    break "control stream failed".to_owned();
                }
            }
            Ok(Control::CommandStarted { command_id, started_us }) if outbound.is_some() => {
                app.commands.started(&id, command_id, started_us).await;
            }
            Ok(Control::CommandResult(result)) if outbound.is_some() => {
                app.commands.result(app.store.as_ref(), &id, result).await;
            }
            Ok(other) => {
                connection.close(close::PROTOCOL.into(), b"unexpected control message");
                break format!("unexpected control message {other:?}");
            }
            Err(ProtoError::Timeout) => {
                connection.close(close::PROTOCOL.into(), b"heartbeat timeout");
                break "heartbeat timeout".to_owned();
            }
            Err(e @ (ProtoError::TooLong { .. } | ProtoError::UnknownKind(_) | ProtoError::Reserved(_))) => {
                connection.close(close::PROTOCOL.into(), e.to_string().as_bytes());
                break format!("protocol error: {e}");
            }
            Err(e) => break format!("control stream ended: {e}"),
        }
    };
    app.commands.agent_offline(&id, generation);
    app.registry.agent_disconnected(&id, generation);
    tracing::info!(instance = %id, reason = %why, "agent offline");
}

/// The next Run Command message for an agent that has the capability; never otherwise.
async fn next_outbound(queue: &mut Option<tokio::sync::mpsc::Receiver<Control>>) -> Option<Control> {
    match queue {
        Some(q) => q.recv().await,
        None => std::future::pending().await,
    }
}

/// Signs a renewal CSR for the same instance and accepts the new certificate next to the one
/// the agent is connected with.
async fn renew(app: &App, instance_id: &str, presented: &str, csr: &str) -> Control {
    let now = now_us();
    let issued = match app.ca.sign_agent_csr(csr, instance_id, now) {
        Ok(issued) => issued,
        Err(e) => {
            tracing::warn!(instance = %instance_id, error = %e, "certificate renewal refused");
            return Control::RenewalRefused { message: e.to_string() };
        }
    };
    match app
        .store
        .renew_agent_certificate(instance_id, presented, &issued.fingerprint, issued.not_after_us, now)
        .await
    {
        Ok(true) => {
            tracing::info!(instance = %instance_id, not_after_us = issued.not_after_us, "agent certificate renewed");
            Control::CertificateRenewed { certificate: issued.pem }
        }
        Ok(false) => Control::RenewalRefused { message: "the instance is deregistered".into() },
        Err(e) => {
            tracing::error!(error = %e, "cannot record a renewed agent certificate");
            Control::RenewalRefused { message: "internal error".into() }
        }
    }
}
