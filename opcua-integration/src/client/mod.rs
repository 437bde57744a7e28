//! The OPC UA client over `opc.tcp`: Hello/Acknowledge, OpenSecureChannel (and renewal at 75 % of the token
//! lifetime), the discovery services, and CloseSecureChannel.
//!
//! A connected [`Client`] is a handle to a task that owns the socket and the sans-IO [`SecureChannel`]. Opening
//! and renewing the channel sign and decrypt with our vault key, so those steps run on a blocking thread.
//!
//! Before anything is sent the client checks its own certificate against its vault key and the policy, and, with a
//! [`PkiStore`] in [`ClientOptions::pki`], the server's certificate: trust (Part 4 §6.1.3, role Server), the host
//! of the endpoint URL and the server's ApplicationUri. A refusal is an [`Error::CertificateRejected`] with the
//! failed check's status code, and the client never opens the channel.
//!
//! ```no_run
//! # async fn demo(identity: certvault_opcua::channel::asymmetric::LocalIdentity, server_cert: Vec<u8>)
//! # -> certvault_opcua::Result<()> {
//! use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
//!
//! let client = certvault_opcua::client::connect(
//!     "opc.tcp://127.0.0.1:4840/",
//!     SecurityPolicy::Aes256Sha256RsaPss,
//!     SecurityMode::SignAndEncrypt,
//!     Some(identity),
//!     Some(&server_cert),
//! )
//! .await?;
//! for endpoint in client.get_endpoints().await? {
//!     println!("{} {:?}", endpoint.security_policy_uri, endpoint.security_mode);
//! }
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! Sessions and services are built on top of a channel: [`Session`] (CreateSession/ActivateSession with vault
//! signatures, user identities, typed services, subscriptions as streams, reconnect), and [`discovery`] picks the
//! endpoint.

mod connection;
pub mod discovery;
pub mod identity;
pub mod push;
mod reconnect;
pub mod services;
pub mod session;
pub mod subscription;

pub use discovery::{EndpointFilter, TRANSPORT_PROFILE_URI};
pub use identity::UserIdentity;
pub use reconnect::ReconnectPolicy;
pub use services::SubscriptionSettings;
pub use session::{ConnectionState, Session, SessionOptions};
pub use subscription::{
    DataChange, MonitoredItemSpec, SequenceCheck, SequenceTracker, SubscriptionParams, SubscriptionStream,
};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opcua_types::{
    ApplicationDescription, DateTime, EndpointDescription, FindServersRequest, FindServersResponse,
    GetEndpointsRequest, GetEndpointsResponse, NodeId, ObjectId, RequestHeader,
};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::channel::asymmetric::{LocalIdentity, PeerCertificate};
use crate::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use crate::channel::secure_channel::{ClientConfig, Event, Now, SecureChannel};
use crate::error::{Error, Result};
use crate::pki::{check_own_certificate, check_peer_certificate, limits_for, IdentityError, PkiStore, Role};
use crate::pki::{Cert, ValidationOptions};
use crate::service::{BodyCodec, HasServiceResult};
use crate::transport::connection::ClientHandshake;
use crate::transport::tcp::{self, on_blocking, read_some};
use crate::transport::uacp::{FrameDecoder, Limits, Negotiated};
use crate::transport::url::OpcTcpUrl;

const READ_CHUNK: usize = 64 * 1024;

/// How to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The endpoint's policy.
    pub policy: SecurityPolicy,
    /// The endpoint's mode.
    pub mode: SecurityMode,
    /// Our certificate and vault key (needed unless the policy is None).
    pub identity: Option<LocalIdentity>,
    /// The server's certificate (DER, from its EndpointDescription). Judged by [`ClientOptions::pki`] when set;
    /// without a PKI store the caller vouches for it.
    pub server_certificate: Option<Vec<u8>>,
    /// The trust store that judges the server certificate (role Server, the URL's host, the ApplicationUri).
    pub pki: Option<Arc<PkiStore>>,
    /// The server's ApplicationUri (from its EndpointDescription); its certificate must carry it
    /// (BadCertificateUriInvalid otherwise). Checked with [`ClientOptions::pki`].
    pub expected_application_uri: Option<String>,
    /// Suppressed checks of the server certificate (all off by default).
    pub validation: ValidationOptions,
    /// Our own ApplicationUri, checked against our certificate at start. When `None`, the certificate must carry
    /// some subjectAltName URI.
    pub application_uri: Option<String>,
    /// Transport limits.
    pub limits: Limits,
    /// Requested token lifetime; the client renews at 75 % of what the server grants.
    pub requested_lifetime: Duration,
    /// Bound for connecting, the handshake, the channel open and each request.
    pub timeout: Duration,
    /// Whether the deprecated SHA-1 policies may be used.
    pub deprecated: DeprecatedPolicies,
}

impl ClientOptions {
    /// Options for `policy`/`mode` with defaults: one-hour tokens, 30 s timeout, default limits.
    pub fn new(policy: SecurityPolicy, mode: SecurityMode) -> Self {
        ClientOptions {
            policy,
            mode,
            identity: None,
            server_certificate: None,
            pki: None,
            expected_application_uri: None,
            validation: ValidationOptions::default(),
            application_uri: None,
            limits: Limits::default(),
            requested_lifetime: Duration::from_secs(3600),
            timeout: Duration::from_secs(30),
            deprecated: DeprecatedPolicies::Reject,
        }
    }
}

impl ClientOptions {
    /// Options for one of the server's endpoints: its policy, mode, certificate and ApplicationUri.
    pub fn for_endpoint(endpoint: &EndpointDescription) -> Result<Self> {
        let policy = SecurityPolicy::from_uri(endpoint.security_policy_uri.as_ref(), DeprecatedPolicies::Reject)?;
        let mode = SecurityMode::from_wire(endpoint.security_mode)?;
        let mut options = ClientOptions::new(policy, mode);
        options.server_certificate = endpoint.server_certificate.value.as_ref().filter(|c| !c.is_empty()).cloned();
        options.expected_application_uri =
            Some(endpoint.server.application_uri.as_ref().to_owned()).filter(|u| !u.is_empty());
        Ok(options)
    }
}

/// Connects to `url` and opens a secure channel with `policy` and `mode`. `identity` and `server_certificate` are
/// needed unless the policy is None; `server_certificate` is trusted as given (use [`Client::connect_with`] with a
/// [`ClientOptions::pki`] to have it judged).
pub async fn connect(
    url: &str,
    policy: SecurityPolicy,
    mode: SecurityMode,
    identity: Option<LocalIdentity>,
    server_certificate: Option<&[u8]>,
) -> Result<Client> {
    let mut options = ClientOptions::new(policy, mode);
    options.identity = identity;
    options.server_certificate = server_certificate.map(<[u8]>::to_vec);
    Client::connect_with(url, options).await
}

/// What the client task reports about its channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelState {
    /// The server-assigned channel id.
    pub secure_channel_id: u32,
    /// The newest token id.
    pub token_id: u32,
    /// How many times the token was renewed.
    pub renewals: u32,
    /// False once the channel closed.
    pub open: bool,
}

/// A connected client channel.
#[derive(Debug)]
pub struct Client {
    endpoint_url: String,
    conn: Arc<connection::Connection>,
    state: watch::Receiver<ChannelState>,
    task: Option<JoinHandle<()>>,
    abort: tokio::task::AbortHandle,
    timeout: Duration,
    codec: BodyCodec,
    next_handle: AtomicU32,
}

impl Client {
    /// Connects with full options.
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        let timeout = options.timeout;
        let span = tracing::info_span!(
            "opcua_client",
            url,
            channel_id = tracing::field::Empty,
            policy = options.policy.name(),
            mode = ?options.mode,
        );
        let (stream, channel, decoder) = tokio::time::timeout(timeout, establish(url, options))
            .instrument(span.clone())
            .await
            .map_err(|_| Error::Timeout("connecting"))??;
        span.record("channel_id", channel.secure_channel_id());
        let initial = ChannelState {
            secure_channel_id: channel.secure_channel_id(),
            token_id: channel.token_id().unwrap_or_default(),
            renewals: 0,
            open: true,
        };
        let (state_tx, state) = watch::channel(initial);
        let (conn, task) = span.in_scope(|| connection::Connection::start(stream, channel, decoder, state_tx));
        Ok(Client {
            endpoint_url: url.to_owned(),
            conn,
            state,
            abort: task.abort_handle(),
            task: Some(task),
            timeout,
            codec: BodyCodec::new(),
            next_handle: AtomicU32::new(1),
        })
    }

    /// The channel's current state.
    pub fn channel_state(&self) -> ChannelState {
        *self.state.borrow()
    }

    /// A receiver of the channel's state: it changes on renewals and when the channel ends (`open == false`), which
    /// is what a session's reconnect logic waits for.
    pub fn watch_state(&self) -> watch::Receiver<ChannelState> {
        self.state.clone()
    }

    /// The endpoint URL this channel was opened to.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// The per-request timeout of [`Client::call`] ([`ClientOptions::timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request body (encoded NodeId + request) and waits for the response body, at most
    /// [`ClientOptions::timeout`].
    pub async fn call(&self, body: Vec<u8>) -> Result<Vec<u8>> {
        self.call_with_timeout(body, self.timeout).await
    }

    /// As [`Client::call`] with a timeout for this request only. Publish requests need it: the server holds them
    /// until it has notifications or a keep-alive is due, which may be longer than the ordinary timeout.
    pub async fn call_with_timeout(&self, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let (reply, response) = oneshot::channel();
        // The connection task fails the request with Error::Timeout at its deadline (see `connection`).
        self.conn.request(body, reply, connection::deadline_after(timeout))?;
        response.await.unwrap_or(Err(Error::ChannelClosed))
    }

    fn header(&self) -> RequestHeader {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let mut header = RequestHeader::new(&NodeId::null(), &DateTime::now(), handle);
        header.timeout_hint = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        header
    }

    async fn service<Req, Resp>(&self, request_id: ObjectId, request: &Req, response_id: ObjectId) -> Result<Resp>
    where
        Req: opcua_types::BinaryEncodable,
        Resp: opcua_types::BinaryDecodable + HasServiceResult,
    {
        let body = self.codec.encode(request_id, request)?;
        let response = self.call(body).await?;
        self.codec.decode_response(response_id, &response)
    }

    /// GetEndpoints for the URL we connected to.
    pub async fn get_endpoints(&self) -> Result<Vec<EndpointDescription>> {
        let request = GetEndpointsRequest {
            request_header: self.header(),
            endpoint_url: self.endpoint_url.as_str().into(),
            locale_ids: None,
            profile_uris: None,
        };
        let response: GetEndpointsResponse = self
            .service(
                ObjectId::GetEndpointsRequest_Encoding_DefaultBinary,
                &request,
                ObjectId::GetEndpointsResponse_Encoding_DefaultBinary,
            )
            .await?;
        Ok(response.endpoints.unwrap_or_default())
    }

    /// FindServers: the servers this endpoint knows (a plain server knows itself).
    pub async fn find_servers(&self) -> Result<Vec<ApplicationDescription>> {
        let request = FindServersRequest {
            request_header: self.header(),
            endpoint_url: self.endpoint_url.as_str().into(),
            locale_ids: None,
            server_uris: None,
        };
        let response: FindServersResponse = self
            .service(
                ObjectId::FindServersRequest_Encoding_DefaultBinary,
                &request,
                ObjectId::FindServersResponse_Encoding_DefaultBinary,
            )
            .await?;
        Ok(response.servers.unwrap_or_default())
    }

    /// Ends the connection task at once, without CloseSecureChannel: every waiting request fails with
    /// [`Error::ChannelClosed`]. For a channel that is believed dead (no answer to a keep-alive), where a polite
    /// close would only wait for the timeout.
    pub fn abort(&self) {
        self.abort.abort();
        self.conn.end();
    }

    /// Sends CloseSecureChannel and closes the socket, through a shared reference (a session keeps its channel
    /// in an `Arc`). The task ends after the message is written.
    pub async fn shutdown(&self) -> Result<()> {
        self.conn.close().await.unwrap_or(Err(Error::ChannelClosed))
    }

    /// Sends CloseSecureChannel and closes the socket.
    pub async fn close(mut self) -> Result<()> {
        let result = self.conn.close().await.unwrap_or(Err(Error::ChannelClosed));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Our certificate against our vault key, our ApplicationUri and the policy's limits.
fn check_own(identity: &crate::channel::asymmetric::LocalIdentity, options: &ClientOptions) -> Result<()> {
    let own_error = |source| Error::OwnCertificate { policy: options.policy.name(), source };
    let uri = match &options.application_uri {
        Some(uri) => uri.clone(),
        None => {
            let cert = Cert::from_der(identity.certificate()).map_err(|e| own_error(IdentityError::Invalid(e)))?;
            cert.uris().first().cloned().ok_or_else(|| {
                own_error(IdentityError::UriMissing { expected: "an ApplicationUri".into(), found: Vec::new() })
            })?
        }
    };
    let spki = &identity.key().info().spki_der;
    check_own_certificate(identity.certificate(), spki, &uri, &[], Role::Client, &limits_for(options.policy))
        .map(|_| ())
        .map_err(own_error)
}

/// The checks before any byte goes to the server: our certificate, and the server's against our PKI store.
fn check_certificates(parsed: &OpcTcpUrl, options: &ClientOptions) -> Result<()> {
    if options.policy.is_none() {
        return Ok(());
    }
    if let Some(identity) = &options.identity {
        check_own(identity, options)?;
    }
    if let (Some(store), Some(cert)) = (&options.pki, &options.server_certificate) {
        let validated = check_peer_certificate(
            store,
            cert,
            options.policy,
            &parsed.host,
            options.expected_application_uri.as_deref(),
            options.validation,
        )?;
        tracing::debug!(subject = validated.leaf().subject(), "server certificate trusted");
    }
    Ok(())
}

/// Certificate checks, TCP connect, Hello/Acknowledge, OpenSecureChannel.
async fn establish(url: &str, options: ClientOptions) -> Result<(TcpStream, SecureChannel, FrameDecoder)> {
    let parsed = OpcTcpUrl::parse(url)?;
    // Validation reads the PKI folders: keep the file system off the async workers.
    let (parsed, options, checked) =
        on_blocking((parsed, options), |(p, o)| check_certificates(p, o)).await.map(|((p, o), r)| (p, o, r))?;
    checked?;
    let mut stream = tcp::connect(&parsed.socket_address()).await?;
    let mut decoder = FrameDecoder::new(options.limits.receive_buffer_size);
    let mut buf = vec![0u8; READ_CHUNK];

    let mut handshake = ClientHandshake::new(options.limits, url)?;
    let mut hello = handshake.poll_transmit()?;
    tcp::flush(&mut stream, || hello.take()).await?;
    let ack = next_frame(&mut stream, &mut decoder, &mut buf).await?;
    let negotiated: Negotiated = handshake.handle_frame(&ack.bytes)?;
    decoder.set_max_frame(negotiated.receive_buffer_size);

    let server_certificate = options.server_certificate.as_deref().map(PeerCertificate::from_der).transpose()?;
    let config = ClientConfig {
        policy: options.policy,
        mode: options.mode,
        identity: options.identity,
        server_certificate,
        requested_lifetime_ms: u32::try_from(options.requested_lifetime.as_millis()).unwrap_or(u32::MAX),
        deprecated: options.deprecated,
    };
    let channel = SecureChannel::client(config, negotiated)?;
    // Signing the OpenSecureChannel request is a vault call.
    let (mut channel, opened) = on_blocking(channel, |c| c.open(Now::system())).await?;
    opened?;
    tcp::flush(&mut stream, || channel.poll_transmit()).await?;
    loop {
        let frame = next_frame(&mut stream, &mut decoder, &mut buf).await?;
        // Decrypting the response is a vault call.
        let (back, handled) = on_blocking(channel, move |c| c.handle_frame(&frame.bytes, Now::system())).await?;
        channel = back;
        handled?;
        match channel.poll_event() {
            Some(Event::Opened { .. }) => return Ok((stream, channel, decoder)),
            Some(Event::Closed { status }) => {
                return Err(Error::Remote { status, reason: "the server refused the channel".into() })
            }
            _ => {}
        }
    }
}

async fn next_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
) -> Result<crate::transport::uacp::Frame> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        match read_some(stream, buf).await? {
            Some(n) => decoder.push(&buf[..n]),
            None => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}
