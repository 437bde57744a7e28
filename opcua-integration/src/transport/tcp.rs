//! The tokio driver of UA TCP: sockets, timers and blocking threads around the sans-IO core.
//!
//! Nothing here knows the protocol. A driver reads bytes, feeds them to the core, writes what the core wants to send
//! and sleeps until the core's next deadline. Steps that may call the vault (OpenSecureChannel processing, opening
//! and renewing a channel) move the core onto a blocking thread with [`on_blocking`], so a slow or remote vault
//! (vaultd, a PKCS#11 token) never stalls the async workers that serve every other channel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::connection::ServerConnection;
use super::uacp::MessageType;
use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::{SecurityMode, SecurityPolicy};
use crate::channel::secure_channel::{Event, Now, SecureChannel, Unsent};
use crate::error::{Error, Result};
use crate::service::BodyCodec;
use crate::vault_pool::Urgency;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Runs `step` on the vault pool ([`crate::vault_pool`], threads at a lower CPU priority) with exclusive ownership
/// of `core`, and gives `core` back with the result.
///
/// The core moves in and out rather than sitting behind a lock, so no async task can observe it half-updated. If
/// the blocking task panics (it should not: the core never panics on input) the core is lost and the connection ends.
pub async fn on_blocking<T, R>(core: T, step: impl FnOnce(&mut T) -> R + Send + 'static) -> Result<(T, R)>
where
    T: Send + 'static,
    R: Send + 'static,
{
    on_blocking_for(Urgency::New, core, step).await
}

/// As [`on_blocking`], at the priority `urgency` asks for: a token renewal keeps an established channel alive and
/// must not wait behind the load ([`Urgency::Established`]).
pub async fn on_blocking_for<T, R>(
    urgency: Urgency,
    core: T,
    step: impl FnOnce(&mut T) -> R + Send + 'static,
) -> Result<(T, R)>
where
    T: Send + 'static,
    R: Send + 'static,
{
    crate::vault_pool::run_for(urgency, move || {
        let mut core = core;
        let r = step(&mut core);
        (core, r)
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
}

/// Connects to `address` with TCP_NODELAY: OPC UA is request/response, and Nagle's algorithm would hold back the
/// last chunk of every message.
pub async fn connect(address: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Bytes gathered before a write while flushing: small frames go out in one write; a large message goes out as
/// soon as this much of it is sealed, so the peer opens its first chunks while the rest is being sealed.
const WRITE_BATCH: usize = 64 * 1024;

/// Writes everything `poll` yields: frames are gathered into writes of about [`WRITE_BATCH`] bytes.
pub async fn flush(stream: &mut TcpStream, mut poll: impl FnMut() -> Option<Vec<u8>>) -> Result<()> {
    let Some(first) = poll() else { return Ok(()) };
    let Some(second) = poll() else {
        // The usual case, one response: written as it is, without gathering (an allocation and a copy).
        stream.write_all(&first).await?;
        return Ok(());
    };
    let mut out = Vec::new();
    for bytes in [first, second].into_iter().chain(std::iter::from_fn(poll)) {
        if out.is_empty() && bytes.len() >= WRITE_BATCH / 2 {
            // A whole chunk: write it as it is, without copying.
            stream.write_all(&bytes).await?;
            continue;
        }
        out.extend_from_slice(&bytes);
        if out.len() >= WRITE_BATCH {
            stream.write_all(&out).await?;
            out.clear();
        }
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

/// A timer a driver loop waits on every turn. Re-arming it to the deadline it already has costs nothing, so a
/// connection does not register and cancel a timer per message (the deadlines of a channel change only when a token
/// is issued or renewed).
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    at: Option<Instant>,
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline::new()
    }
}

impl Deadline {
    /// An unarmed timer.
    pub fn new() -> Self {
        // Armed lazily: the first `wait` with a deadline resets it.
        Deadline { sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))), at: None }
    }

    /// Completes at `deadline`, or never without one.
    pub async fn wait(&mut self, deadline: Option<Instant>) {
        let Some(at) = deadline else { return std::future::pending().await };
        if self.at != Some(at) {
            self.sleep.as_mut().reset(at.into());
            self.at = Some(at);
        }
        self.sleep.as_mut().await
    }
}

/// What a service handler learns about the secure channel a request came in on.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    /// The server-assigned secure channel id (sessions are bound to it).
    pub secure_channel_id: u32,
    /// The channel's policy.
    pub policy: SecurityPolicy,
    /// The channel's mode.
    pub mode: SecurityMode,
    /// The client's certificate from OpenSecureChannel (None for policy None).
    pub peer_certificate: Option<PeerCertificate>,
    /// The server certificate and key this channel was opened with: a certificate update (GDS push) after the
    /// channel opened does not change it, and sessions created on the channel must name this certificate.
    pub local_identity: Option<crate::channel::asymmetric::LocalIdentity>,
}

impl ChannelInfo {
    /// The information of an open channel.
    pub fn of(channel: &SecureChannel) -> Self {
        ChannelInfo {
            secure_channel_id: channel.secure_channel_id(),
            policy: channel.policy(),
            mode: channel.mode(),
            peer_certificate: channel.peer_certificate().cloned(),
            local_identity: channel.local_identity().cloned(),
        }
    }
}

/// A response that is ready now, or one that a future produces later (a vault signature on a blocking thread, a
/// method handler, a Publish request that waits for notifications). The connection keeps serving other requests
/// while a later response is pending.
pub enum Reply {
    /// The encoded NodeId + response.
    Ready(Vec<u8>),
    /// A future yielding the encoded NodeId + response.
    Later(Pin<Box<dyn Future<Output = Vec<u8>> + Send>>),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ready(bytes) => write!(f, "Reply::Ready({} bytes)", bytes.len()),
            Reply::Later(_) => f.write_str("Reply::Later"),
        }
    }
}

/// Answers the service requests of one server channel.
pub trait ServiceHandler: Send + Sync + 'static {
    /// Answers one request (`body` is the encoded NodeId + request). Called on the connection's task: anything
    /// slow (the vault, an application callback) belongs in a [`Reply::Later`].
    fn handle(&self, body: Vec<u8>, channel: &ChannelInfo, now: Now) -> Reply;

    /// The channel `secure_channel_id` is gone: its pending requests will never be answered.
    fn channel_closed(&self, _secure_channel_id: u32) {}
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
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut info = None;
    let mut timer = Deadline::new();
    // One future for the whole connection: re-creating `changed()` every turn registered a waiter per request.
    let stopped = async move {
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                return;
            }
        }
    };
    tokio::pin!(stopped);
    let result = loop {
        if let Err(e) = process(&mut core, handler, &mut pending, &mut info).await {
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
            Some((request_id, response)) = pending.next(), if !pending.is_empty() => {
                send_response(conn, request_id, response);
            }
            () = timer.wait(deadline) => {
                // Server-side timeouts (hello, token expiry) never call the vault.
                if let Err(e) = conn.handle_timeout(Now::system()) {
                    tracing::debug!(error = %e, "connection timed out");
                    flush(&mut stream, || conn.poll_transmit()).await?;
                    break Ok(());
                }
            }
            () = &mut stopped => break Ok(()),
        }
    };
    // Pending replies die with the connection; drop them first so the handler sees their receivers closed.
    drop(pending);
    if let Some(info) = info {
        handler.channel_closed(info.secure_channel_id);
    }
    let _ = stream.shutdown().await;
    result
}

/// A response being produced, with the request id it answers.
type Pending = Pin<Box<dyn Future<Output = (u32, Vec<u8>)> + Send>>;

/// Processes every whole frame the connection holds, OpenSecureChannel frames on a blocking thread, and answers the
/// requests that result.
async fn process<H: ServiceHandler + ?Sized>(
    core: &mut Option<ServerConnection>,
    handler: &H,
    pending: &mut FuturesUnordered<Pending>,
    info: &mut Option<ChannelInfo>,
) -> Result<()> {
    loop {
        let Some(conn) = core.as_mut() else { return Err(Error::ChannelClosed) };
        let Some(kind) = conn.peek_kind() else { return Ok(()) };
        // One clock reading per frame serves its processing and the request it completes (and none when no frame
        // is there: the wall clock's conversion to an OPC UA DateTime is a tenth of a microsecond).
        let mut now = Now::system();
        let step = if needs_vault(kind) {
            // Only a vault step moves the core (onto a blocking thread); a MSG frame is processed in place.
            let Some(owned) = core.take() else { return Err(Error::ChannelClosed) };
            // An OpenSecureChannel on an open channel renews its token: that keeps established traffic alive.
            let renewal = owned.channel().is_some_and(|c| c.token_id().is_some());
            let urgency = if renewal { Urgency::Established } else { Urgency::New };
            let (back, step) = on_blocking_for(urgency, owned, |c| c.process_next(Now::system())).await?;
            *core = Some(back);
            // The vault call took its time.
            now = Now::system();
            step
        } else {
            conn.process_next(now)
        };
        let Some(conn) = core.as_mut() else { return Err(Error::ChannelClosed) };
        drain_events(conn, handler, pending, info, now);
        match step {
            Ok(true) if !conn.is_closed() => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn send_response(conn: &mut ServerConnection, request_id: u32, response: Vec<u8>) {
    let Some(channel) = conn.channel_mut() else { return };
    match channel.send_response(request_id, response) {
        Ok(()) => {}
        // Over the client's MaxMessageSize or MaxChunkCount: answer with a ServiceFault (Part 4 §7.34 and Part 6
        // §6.7.2: BadResponseTooLarge) rather than nothing, which left the client waiting for its timeout.
        Err(Unsent { error: e @ Error::ResponseTooLarge { .. }, body }) => {
            tracing::warn!(request_id, error = %e, "response too large for the client; answering with a fault");
            let fault = BodyCodec::shared().fault_instead_of(&body, e.status_code());
            if let Err(e) = channel.send_response(request_id, fault) {
                tracing::warn!(request_id, error = %e.error, "could not send a fault");
            }
        }
        Err(e) => tracing::warn!(request_id, error = %e.error, "could not send a response"),
    }
}

fn drain_events<H: ServiceHandler + ?Sized>(
    conn: &mut ServerConnection,
    handler: &H,
    pending: &mut FuturesUnordered<Pending>,
    info: &mut Option<ChannelInfo>,
    now: Now,
) {
    while let Some(event) = conn.poll_event() {
        match event {
            Event::Request { request_id, body } => {
                // What a handler learns of the channel is fixed when its token is issued: built once, not per
                // request.
                let channel_info = match info {
                    Some(info) => &*info,
                    None => {
                        let Some(channel) = conn.channel() else { return };
                        info.insert(ChannelInfo::of(channel))
                    }
                };
                match handler.handle(body, channel_info, now) {
                    Reply::Ready(response) => send_response(conn, request_id, response),
                    Reply::Later(future) => pending.push(Box::pin(async move { (request_id, future.await) })),
                }
            }
            Event::Opened { secure_channel_id, token_id, revised_lifetime_ms, renewed } => {
                *info = conn.channel().map(ChannelInfo::of);
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
