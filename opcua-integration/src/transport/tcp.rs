//! The tokio driver of UA TCP: sockets, timers and blocking threads around the sans-IO core.
//!
//! Nothing here knows the protocol. A driver reads bytes, feeds them to the core, writes what the core wants to send
//! and sleeps until the core's next deadline. Steps that may call the vault (OpenSecureChannel processing, opening
//! and renewing a channel) move the core onto a blocking thread with [`on_blocking`], so a slow or remote vault
//! (vaultd, a PKCS#11 token) never stalls the async workers that serve every other channel.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::connection::ServerConnection;
use super::uacp::MessageType;
use crate::channel::secure_channel::{Event, Now, SecureChannel};
use crate::error::{Error, Result};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Runs `step` on a blocking thread with exclusive ownership of `core`, and gives `core` back with the result.
///
/// The core moves in and out rather than sitting behind a lock, so no async task can observe it half-updated. If
/// the blocking task panics (it should not: the core never panics on input) the core is lost and the connection ends.
pub async fn on_blocking<T, R>(core: T, step: impl FnOnce(&mut T) -> R + Send + 'static) -> Result<(T, R)>
where
    T: Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut core = core;
        let r = step(&mut core);
        (core, r)
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(format!("blocking task failed: {e}"))))
}

/// Connects to `address` with TCP_NODELAY: OPC UA is request/response, and Nagle's algorithm would hold back the
/// last chunk of every message.
pub async fn connect(address: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes everything `poll` yields, batched into one write per call.
pub async fn flush(stream: &mut TcpStream, mut poll: impl FnMut() -> Option<Vec<u8>>) -> Result<()> {
    let mut out = Vec::new();
    while let Some(bytes) = poll() {
        out.extend_from_slice(&bytes);
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

/// Reads what the socket has; `Ok(None)` when the peer closed it.
pub async fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>> {
    match stream.read(buf).await? {
        0 => Ok(None),
        n => Ok(Some(n)),
    }
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Answers the service requests of one server channel.
pub trait ServiceHandler: Send + Sync + 'static {
    /// Answers one request (`body` is the encoded NodeId + request) with the encoded NodeId + response. Cheap,
    /// called on the connection's task.
    fn handle(&self, body: &[u8], channel: &SecureChannel, now: Now) -> Vec<u8>;
}

/// Serves one accepted connection until it closes, the peer goes away, or `shutdown` turns true.
///
/// The caller instruments the returned future with the connection's span (peer address); the channel id, policy and
/// mode are recorded on it once the channel opens.
pub async fn serve_connection<H: ServiceHandler + ?Sized>(
    mut stream: TcpStream,
    connection: ServerConnection,
    handler: &H,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut core = Some(connection);
    let mut buf = vec![0u8; READ_CHUNK];
    let result = loop {
        if let Err(e) = process(&mut core, handler).await {
            tracing::debug!(error = %e, "connection step failed");
        }
        let Some(conn) = core.as_mut() else { break Err(Error::ChannelClosed) };
        flush(&mut stream, || conn.poll_transmit()).await?;
        if conn.is_closed() {
            break Ok(());
        }
        let deadline = conn.poll_timeout();
        tokio::select! {
            read = read_some(&mut stream, &mut buf) => match read? {
                Some(n) => conn.receive(&buf[..n]),
                None => break Ok(()),
            },
            () = sleep_until(deadline) => {
                // Server-side timeouts (hello, token expiry) never call the vault.
                if let Err(e) = conn.handle_timeout(Now::system()) {
                    tracing::debug!(error = %e, "connection timed out");
                    flush(&mut stream, || conn.poll_transmit()).await?;
                    break Ok(());
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break Ok(());
                }
            }
        }
    };
    let _ = stream.shutdown().await;
    result
}

/// Processes every whole frame the connection holds, OpenSecureChannel frames on a blocking thread, and answers the
/// requests that result.
async fn process<H: ServiceHandler + ?Sized>(core: &mut Option<ServerConnection>, handler: &H) -> Result<()> {
    loop {
        let Some(mut conn) = core.take() else { return Err(Error::ChannelClosed) };
        let step = if conn.next_needs_vault() {
            let (back, step) = on_blocking(conn, |c| c.process_next(Now::system())).await?;
            conn = back;
            step
        } else {
            conn.process_next(Now::system())
        };
        drain_events(&mut conn, handler);
        let closed = conn.is_closed();
        *core = Some(conn);
        match step {
            Ok(true) if !closed => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn drain_events<H: ServiceHandler + ?Sized>(conn: &mut ServerConnection, handler: &H) {
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Request { request_id, body } => {
                let Some(channel) = conn.channel_mut() else { return };
                let response = handler.handle(&body, channel, Now::system());
                if let Err(e) = channel.send_response(request_id, &response) {
                    tracing::warn!(request_id, error = %e, "could not send a response");
                }
            }
            Event::Opened { secure_channel_id, token_id, revised_lifetime_ms, renewed } => {
                let span = tracing::Span::current();
                if let Some(channel) = conn.channel() {
                    span.record("channel_id", secure_channel_id);
                    span.record("policy", channel.policy().name());
                    span.record("mode", tracing::field::debug(channel.mode()));
                }
                tracing::debug!(token_id, revised_lifetime_ms, renewed, "security token issued");
            }
            Event::Closed { status } => tracing::debug!(%status, "channel closed"),
            Event::Aborted { request_id, status, .. } => tracing::debug!(request_id, %status, "request aborted"),
            Event::Response { .. } => {}
        }
    }
}

/// The span of one server connection: the fields are filled in as the channel opens.
pub fn connection_span(peer: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "opcua_connection",
        peer = %peer,
        channel_id = tracing::field::Empty,
        policy = tracing::field::Empty,
        mode = tracing::field::Empty,
    )
}

/// True for frames whose processing calls the vault.
pub fn needs_vault(message_type: MessageType) -> bool {
    message_type == MessageType::OpenSecureChannel
}
