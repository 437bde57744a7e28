//! Sessions (Part 4 §5.7): CreateSession, ActivateSession, CloseSession, the keep-alive that stops an idle session
//! from timing out, and the state a caller watches while the session reconnects.
//!
//! The proofs of possession go through vaults: the clientSignature over serverCertificate || serverNonce is made by
//! our application key, an X.509 user's userTokenSignature by the user's key. Before either is made, the client
//! checks that CreateSession answered with the endpoint's certificate and that the serverSignature over
//! clientCertificate || clientNonce verifies with it; otherwise the session is closed and the connect fails with
//! BadApplicationSignatureInvalid (or BadCertificateInvalid for another certificate).
//!
//! ```no_run
//! # async fn demo(app: certvault_opcua::channel::asymmetric::LocalIdentity) -> certvault_opcua::Result<()> {
//! use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
//! use certvault_opcua::client::{ClientOptions, EndpointFilter, Session, SessionOptions, UserIdentity};
//!
//! // Discover over a None channel, pick the strongest endpoint allowed, connect and activate.
//! let mut channel = ClientOptions::new(SecurityPolicy::None, SecurityMode::None);
//! channel.identity = Some(app);
//! let mut options = SessionOptions::new(channel);
//! options.discovery = Some(EndpointFilter::secure());
//! options.identity = UserIdentity::user_name("operator", "secret");
//! let session = Session::connect("opc.tcp://plc:4840/", options).await?;
//! let now = session.read_value(&opcua_types::VariableId::Server_ServerStatus_CurrentTime.into()).await?;
//! println!("server time {now:?}");
//! session.close().await?;
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_types::{
    ActivateSessionRequest, ApplicationDescription, ApplicationType, ByteString, CloseSessionRequest,
    CreateSessionRequest, CreateSessionResponse, DataValue, DecodingOptions, EndpointDescription, LocalizedText,
    NodeId, ObjectId, ReadRequest, ReadResponse, ReadValueId, RequestHeader, StatusCode, TimestampsToReturn, UAString,
    VariableId,
};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::discovery::{find_endpoint, EndpointFilter};
use super::identity::{build_token, TokenContext, UserIdentity};
use super::reconnect::{self, ReconnectPolicy};
use super::services::ServiceRequest;
use super::subscription::{self, Registry};
use super::{Client, ClientOptions};
use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use crate::error::{Error, Result};
use crate::pki::Cert;
use crate::read_codec::{self, RequestHeaderParts};
use crate::service::BodyCodec;
use crate::session;

/// How to open and keep a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// The channel: our identity, trust store, limits, timeouts. With [`SessionOptions::discovery`] its policy and
    /// mode are those of the discovery channel and the chosen endpoint replaces them; without, they name the
    /// endpoint to use.
    pub channel: ClientOptions,
    /// Discover first: GetEndpoints over the [`SessionOptions::channel`] policy (usually None), then connect to the
    /// endpoint this filter picks.
    pub discovery: Option<EndpointFilter>,
    /// The user.
    pub identity: UserIdentity,
    /// Our ApplicationUri in the ApplicationDescription; by default the one in our certificate.
    pub application_uri: Option<String>,
    /// Our ApplicationName.
    pub application_name: String,
    /// Our ProductUri.
    pub product_uri: String,
    /// The session's name (for the server's diagnostics).
    pub session_name: String,
    /// The session timeout we ask for; the server may revise it.
    pub session_timeout: Duration,
    /// The largest response we accept (0: no limit); sent in CreateSession.
    pub max_response_message_size: u32,
    /// How long the session may be idle before the keep-alive reads the server's CurrentTime. `None`: a third of
    /// the revised session timeout.
    pub keep_alive_interval: Option<Duration>,
    /// Reconnect back-off.
    pub reconnect: ReconnectPolicy,
    /// Publish requests kept outstanding while the session has subscriptions.
    pub publish_requests: usize,
    /// Whether a UserTokenPolicy may name Basic128Rsa15 or Basic256 (some servers, async-opcua among them, sign
    /// X.509 user tokens with Basic128Rsa15's RSA-SHA1).
    pub deprecated_user_token_policies: DeprecatedPolicies,
    /// Whether a password may be sent unencrypted when the token policy is None and the channel does not encrypt
    /// (policy None, or mode Sign). Inside a SignAndEncrypt channel a None token policy needs no opt-in.
    pub allow_unencrypted_password: bool,
    /// Limits on what responses may contain (string, byte string and array lengths, nesting depth); by default
    /// async-opcua-types' (65,535-byte strings and byte strings, 1,000-element arrays). Raise
    /// `max_byte_string_length` to read larger ByteString values.
    pub decoding: DecodingOptions,
}

impl SessionOptions {
    /// Defaults around `channel`: anonymous, one-minute session timeout, 3 publish requests, no discovery.
    pub fn new(channel: ClientOptions) -> Self {
        SessionOptions {
            channel,
            discovery: None,
            identity: UserIdentity::Anonymous,
            application_uri: None,
            application_name: "certvault client".into(),
            product_uri: "urn:certvault:client".into(),
            session_name: "certvault session".into(),
            session_timeout: Duration::from_secs(60),
            max_response_message_size: 0,
            keep_alive_interval: None,
            reconnect: ReconnectPolicy::default(),
            publish_requests: 3,
            deprecated_user_token_policies: DeprecatedPolicies::Reject,
            allow_unencrypted_password: false,
            decoding: crate::service::default_decoding_options(),
        }
    }
}

/// Where the session stands; watch it with [`Session::state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// The channel is open and the session activated on it.
    Connected,
    /// The channel was lost; the client is opening a new one (attempt counts from 1).
    Reconnecting {
        /// The attempt in progress.
        attempt: u32,
    },
    /// The reconnect policy gave up; the last error's status.
    Failed(StatusCode),
    /// [`Session::close`] was called.
    Closed,
}

/// What the server told us about the session; replaced on re-creation, the nonce on every activation.
#[derive(Clone)]
pub(crate) struct SessionIds {
    pub session_id: NodeId,
    pub auth_token: NodeId,
    pub server_nonce: Vec<u8>,
    pub server_certificate: Option<PeerCertificate>,
    pub revised_timeout: Duration,
}

/// The shared state of a session: the tasks (reconnect, keep-alive, publish) and the handles all use it.
pub(crate) struct Inner {
    pub url: String,
    pub options: SessionOptions,
    /// The channel options of the chosen endpoint, for every reconnect.
    pub channel_options: ClientOptions,
    pub endpoint: EndpointDescription,
    pub channel: Mutex<Arc<Client>>,
    pub ids: Mutex<SessionIds>,
    pub state: watch::Sender<ConnectionState>,
    codec: BodyCodec,
    next_handle: AtomicU32,
    last_activity: Mutex<Instant>,
    pub subscriptions: Mutex<Registry>,
    /// Wakes the publish loop (a subscription was added, the session reconnected).
    pub publish_wake: Notify,
    /// Asks the supervisor to reconnect now (a service said the session is gone, a keep-alive went unanswered).
    pub reconnect_now: Notify,
    pub closing: AtomicBool,
    pub span: tracing::Span,
}

/// Statuses that say the session no longer exists on the server: a reconnect must create a new one.
pub(crate) fn session_lost(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadSessionIdInvalid | StatusCode::BadSessionClosed | StatusCode::BadSessionNotActivated
    )
}

/// Errors that say the channel is unusable (as opposed to a service-level refusal).
pub(crate) fn channel_lost(error: &Error) -> bool {
    matches!(error, Error::ChannelClosed | Error::Io(_) | Error::Timeout(_))
        || matches!(error, Error::Remote { status, .. } if *status == StatusCode::BadSecureChannelClosed)
}

impl Inner {
    /// Sends `request` on `client` (whatever the session state) with the session's authentication token.
    pub async fn send_on<R: ServiceRequest>(
        &self,
        client: &Client,
        mut request: R,
        timeout: Option<Duration>,
    ) -> Result<R::Response> {
        // Callers build requests with `RequestHeader::default()`: the real header (token, handle, timestamp) is made
        // here, so the placeholder should not read the clock.
        let encode = |header: &RequestHeaderParts<'_>| {
            *request.header_mut() = header.to_header();
            self.codec.encode(R::REQUEST, &request)
        };
        self.exchange(client, timeout, encode, |body| self.codec.decode_response(R::RESPONSE, body)).await
    }

    /// Read on `client`, through [`read_codec`]: the request is written directly, and a plain response is parsed
    /// directly (anything else by the generic codec).
    pub async fn read_on(
        &self,
        client: &Client,
        nodes: &[ReadValueId],
        timestamps: TimestampsToReturn,
        max_age: f64,
    ) -> Result<Vec<DataValue>> {
        let encode = |header: &RequestHeaderParts<'_>| {
            read_codec::encode_read_request(&self.codec, header, max_age, timestamps, nodes)
        };
        let decode = |body: &[u8]| match read_codec::decode_read_results(&self.codec, body) {
            Some(results) => Ok(results),
            None => self
                .codec
                .decode_response::<ReadResponse>(ObjectId::ReadResponse_Encoding_DefaultBinary, body)
                .map(|response| response.results.unwrap_or_default()),
        };
        self.exchange(client, None, encode, decode).await
    }

    /// One request and its response: `encode` writes the body around the session's request header, `decode` reads
    /// the response. A status saying the server lost the session starts a reconnect.
    async fn exchange<T>(
        &self,
        client: &Client,
        timeout: Option<Duration>,
        encode: impl FnOnce(&RequestHeaderParts<'_>) -> Result<Vec<u8>>,
        decode: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let timeout = timeout.unwrap_or(client.timeout());
        let body = {
            let ids = self.ids.lock();
            encode(&RequestHeaderParts {
                authentication_token: &ids.auth_token,
                timestamp: read_codec::now_ticks(),
                request_handle: self.next_handle.fetch_add(1, Ordering::Relaxed),
                timeout_hint: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            })?
        };
        let result = client.call_with_timeout(body, timeout).await;
        let decoded = result.and_then(|response| decode(&response));
        match &decoded {
            Ok(_) => *self.last_activity.lock() = Instant::now(),
            Err(Error::Remote { status, .. }) if session_lost(*status) => {
                // Flip the state at once, so requests issued from now on wait for the new session instead of
                // failing the same way; only a connected session asks: during a reconnect the supervisor itself
                // sees this status and handles it.
                let flagged = self.state.send_if_modified(|s| {
                    let connected = *s == ConnectionState::Connected;
                    if connected {
                        *s = ConnectionState::Reconnecting { attempt: 0 };
                    }
                    connected
                });
                if flagged {
                    tracing::info!(parent: &self.span, %status, "the server lost the session");
                    self.reconnect_now.notify_one();
                }
            }
            Err(_) => {}
        }
        decoded
    }

    /// The current channel once the session is connected (waits through a reconnect, at most the channel
    /// timeout).
    pub async fn connected_channel(&self) -> Result<Arc<Client>> {
        // Every request of a healthy session comes here: answer it without a subscription and a timer.
        if *self.state.borrow() == ConnectionState::Connected {
            return Ok(self.channel.lock().clone());
        }
        let mut state = self.state.subscribe();
        let wait = state.wait_for(|s| !matches!(s, ConnectionState::Reconnecting { .. }));
        let reached = tokio::time::timeout(self.channel_options.timeout, wait)
            .await
            .map_err(|_| Error::Timeout("reconnecting"))?
            .map_err(|_| Error::ChannelClosed)?
            .clone();
        match reached {
            ConnectionState::Connected => Ok(self.channel.lock().clone()),
            ConnectionState::Failed(status) => {
                Err(Error::Remote { status, reason: "the session could not reconnect".into() })
            }
            _ => Err(Error::ChannelClosed),
        }
    }

    /// Sends `request` once the session is connected. Requests are never resent after a channel loss: the server
    /// may have executed them (a Write, a Call).
    pub async fn send<R: ServiceRequest>(&self, request: R, timeout: Option<Duration>) -> Result<R::Response> {
        let client = self.connected_channel().await?;
        self.send_on(&client, request, timeout).await
    }

    pub fn idle_for(&self) -> Duration {
        self.last_activity.lock().elapsed()
    }

    pub fn keep_alive_interval(&self) -> Duration {
        self.options.keep_alive_interval.unwrap_or_else(|| {
            let revised = self.ids.lock().revised_timeout;
            (revised / 3).max(Duration::from_millis(500))
        })
    }

    /// Reads Server_ServerStatus_CurrentTime: the cheapest request that counts as session activity.
    pub async fn keep_alive(&self, client: &Client) -> Result<()> {
        let request = ReadRequest {
            request_header: RequestHeader::default(),
            max_age: 0.0,
            timestamps_to_return: TimestampsToReturn::Neither,
            nodes_to_read: Some(vec![ReadValueId::from(NodeId::from(VariableId::Server_ServerStatus_CurrentTime))]),
        };
        self.send_on(client, request, None).await.map(|_| ())
    }

    fn own_certificate(&self) -> Option<&[u8]> {
        self.channel_options.identity.as_ref().map(|i| i.certificate())
    }

    fn client_description(&self) -> ApplicationDescription {
        let uri = self
            .options
            .application_uri
            .clone()
            .or_else(|| self.channel_options.application_uri.clone())
            .or_else(|| {
                let cert = Cert::from_der(self.own_certificate()?).ok()?;
                cert.uris().first().cloned()
            })
            .unwrap_or_else(|| "urn:certvault:client".into());
        ApplicationDescription {
            application_uri: uri.into(),
            product_uri: self.options.product_uri.as_str().into(),
            application_name: LocalizedText::new("", &self.options.application_name),
            application_type: ApplicationType::Client,
            gateway_server_uri: UAString::null(),
            discovery_profile_uri: UAString::null(),
            discovery_urls: None,
        }
    }

    /// CreateSession on `client`, with the checks of the server's answer. On success the new ids replace the old.
    pub async fn create_session(&self, client: &Client) -> Result<()> {
        let policy = self.channel_options.policy;
        let client_nonce = session::new_nonce()?;
        let own = self.own_certificate().map(<[u8]>::to_vec);
        let request = CreateSessionRequest {
            request_header: RequestHeader::default(),
            client_description: self.client_description(),
            server_uri: self.endpoint.server.application_uri.clone(),
            endpoint_url: self.url.as_str().into(),
            session_name: self.options.session_name.as_str().into(),
            client_nonce: ByteString::from(client_nonce.to_vec()),
            client_certificate: own.clone().map(ByteString::from).unwrap_or_else(ByteString::null),
            requested_session_timeout: self.options.session_timeout.as_secs_f64() * 1000.0,
            max_response_message_size: self.options.max_response_message_size,
        };
        // A new session starts without an authentication token.
        self.ids.lock().auth_token = NodeId::null();
        let response = self.send_on(client, request, None).await?;
        let closing_token = response.authentication_token.clone();

        let checked = check_create_session(
            &response,
            policy,
            self.channel_options.mode,
            self.channel_options.server_certificate.as_deref(),
            own.as_deref().unwrap_or_default(),
            &client_nonce,
        );
        let server = match checked {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(parent: &self.span, error = %e, "CreateSession answer failed its checks; closing the session");
                self.ids.lock().auth_token = closing_token;
                let _ = self.close_session_on(client).await;
                return Err(e);
            }
        };
        let revised = Duration::from_secs_f64((response.revised_session_timeout / 1000.0).clamp(1.0, 86_400.0));
        tracing::info!(parent: &self.span, session_id = %response.session_id, revised_timeout = ?revised, "session created");
        self.span.record("session_id", tracing::field::display(&response.session_id));
        *self.ids.lock() = SessionIds {
            session_id: response.session_id,
            auth_token: response.authentication_token,
            server_nonce: response.server_nonce.value.unwrap_or_default(),
            server_certificate: server,
            revised_timeout: revised,
        };
        Ok(())
    }

    /// ActivateSession on `client` with a fresh clientSignature and user token over the last server nonce.
    pub async fn activate(&self, client: &Client) -> Result<()> {
        let ids = self.ids.lock().clone();
        let policy = self.channel_options.policy;
        let identity = self.channel_options.identity.clone();
        let user = self.options.identity.clone();
        let endpoint = self.endpoint.clone();
        let deprecated = self.options.deprecated_user_token_policies;
        let allow_plain = self.options.allow_unencrypted_password;
        // Both signatures are vault calls (possibly to another process): off the async workers.
        let signed = crate::vault_pool::run(move || -> Result<_> {
            let client_signature = match (&identity, &ids.server_certificate) {
                (Some(identity), Some(server)) if !policy.is_none() => {
                    session::sign(identity.key().as_ref(), policy, server.certificate(), &ids.server_nonce)?
                }
                _ => opcua_types::SignatureData { algorithm: UAString::null(), signature: ByteString::null() },
            };
            let ctx = TokenContext {
                endpoint: &endpoint,
                channel_policy: policy,
                server_certificate: ids.server_certificate.as_ref(),
                server_nonce: &ids.server_nonce,
                deprecated,
                allow_unencrypted_password: allow_plain,
            };
            let (token, token_signature) = build_token(&user, &ctx)?;
            Ok((client_signature, token, token_signature))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(format!("signing task failed: {e}"))))??;
        let (client_signature, user_identity_token, user_token_signature) = signed;
        let request = ActivateSessionRequest {
            request_header: RequestHeader::default(),
            client_signature,
            client_software_certificates: None,
            locale_ids: None,
            user_identity_token,
            user_token_signature,
        };
        let response = self.send_on(client, request, None).await?;
        if let Some(bad) = response.results.iter().flatten().find(|s| s.is_bad()) {
            return Err(Error::Remote { status: *bad, reason: "ActivateSession result".into() });
        }
        // The next activation (after a reconnect) signs this nonce.
        self.ids.lock().server_nonce = response.server_nonce.value.unwrap_or_default();
        tracing::debug!(parent: &self.span, "session activated");
        Ok(())
    }

    pub async fn close_session_on(&self, client: &Client) -> Result<()> {
        let request = CloseSessionRequest { request_header: RequestHeader::default(), delete_subscriptions: true };
        self.send_on(client, request, None).await.map(|_| ())
    }

    pub fn set_state(&self, state: ConnectionState) {
        tracing::info!(parent: &self.span, ?state, "session state");
        self.state.send_replace(state);
    }
}

/// The checks of a CreateSession answer before anything is signed for it (Part 4 §5.7.2): the server certificate
/// is the endpoint's, the serverSignature over our certificate and nonce verifies with it
/// (BadApplicationSignatureInvalid otherwise), and serverEndpoints still offer our endpoint with that certificate.
/// Returns the server certificate to use for the clientSignature and user tokens.
pub(crate) fn check_create_session(
    response: &CreateSessionResponse,
    policy: SecurityPolicy,
    mode: SecurityMode,
    expected_certificate: Option<&[u8]>,
    own_certificate: &[u8],
    client_nonce: &[u8],
) -> Result<Option<PeerCertificate>> {
    let from_response = response.server_certificate.value.as_deref().filter(|c| !c.is_empty());
    let server = match (from_response, expected_certificate) {
        (Some(got), Some(want)) => {
            let got = PeerCertificate::from_der(got)?;
            let want = PeerCertificate::from_der(want)?;
            if got.certificate() != want.certificate() {
                return Err(Error::CertificateInvalid(
                    "CreateSession answered with another certificate than the endpoint's".into(),
                ));
            }
            Some(got)
        }
        (Some(got), None) => Some(PeerCertificate::from_der(got)?),
        (None, Some(want)) if policy.is_none() => Some(PeerCertificate::from_der(want)?),
        (None, Some(_)) => return Err(Error::CertificateInvalid("CreateSession carried no server certificate".into())),
        (None, None) => None,
    };
    if policy.is_none() {
        return Ok(server);
    }
    let Some(server) = server else {
        return Err(Error::CertificateInvalid("no server certificate for a secured session".into()));
    };
    session::verify(&server, policy, own_certificate, client_nonce, &response.server_signature)?;
    // GetEndpoints ran over an unauthenticated channel: a downgrade would show here.
    let endpoints = response.server_endpoints.as_deref().unwrap_or_default();
    if !endpoints.is_empty() {
        let ours = find_endpoint(endpoints, policy, mode)
            .ok_or(Error::SecurityChecksFailed("CreateSession's serverEndpoints do not offer the endpoint we use"))?;
        let cert = ours.server_certificate.value.as_deref().unwrap_or_default();
        if !cert.is_empty() && PeerCertificate::from_der(cert)?.certificate() != server.certificate() {
            return Err(Error::SecurityChecksFailed("CreateSession's serverEndpoints name another certificate"));
        }
    }
    Ok(Some(server))
}

/// A session: a channel plus an activated session on it, with its background tasks (keep-alive and reconnect,
/// publishing). Dropping it stops the tasks without closing the session politely; call [`Session::close`].
pub struct Session {
    pub(crate) inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.inner.url)
            .field("session_id", &self.inner.ids.lock().session_id)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl Session {
    /// Connects (after discovery when [`SessionOptions::discovery`] is set), creates and activates a session.
    ///
    /// The URL given is where the client connects, also after discovery: servers often advertise host names that
    /// do not resolve from the client (NAT, containers, proxies), and the endpoint description only chooses the
    /// security.
    pub async fn connect(url: &str, options: SessionOptions) -> Result<Session> {
        let span = tracing::info_span!("opcua_session", url, session_id = tracing::field::Empty);
        Self::connect_in(url, options, span.clone()).instrument(span).await
    }

    async fn connect_in(url: &str, options: SessionOptions, span: tracing::Span) -> Result<Session> {
        let (endpoint, channel_options, reusable) = choose_endpoint(url, &options).await?;
        let client = match reusable {
            Some(client) => client,
            None => Client::connect_with(url, channel_options.clone()).await?,
        };
        let client = Arc::new(client);
        let (state, _) = watch::channel(ConnectionState::Reconnecting { attempt: 0 });
        let codec = BodyCodec::with_options(options.decoding.clone());
        let inner = Arc::new(Inner {
            url: url.to_owned(),
            channel_options,
            endpoint,
            channel: Mutex::new(client.clone()),
            ids: Mutex::new(SessionIds {
                session_id: NodeId::null(),
                auth_token: NodeId::null(),
                server_nonce: Vec::new(),
                server_certificate: None,
                revised_timeout: options.session_timeout,
            }),
            options,
            state,
            codec,
            next_handle: AtomicU32::new(1),
            last_activity: Mutex::new(Instant::now()),
            subscriptions: Mutex::new(Registry::default()),
            publish_wake: Notify::new(),
            reconnect_now: Notify::new(),
            closing: AtomicBool::new(false),
            span: span.clone(),
        });
        let established = async {
            inner.create_session(&client).await?;
            if let Err(e) = inner.activate(&client).await {
                let _ = inner.close_session_on(&client).await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        if let Err(e) = established {
            let _ = client.shutdown().await;
            return Err(e);
        }
        inner.set_state(ConnectionState::Connected);
        let tasks = vec![
            tokio::spawn(reconnect::supervise(inner.clone()).instrument(span.clone())),
            tokio::spawn(subscription::publish_loop(inner.clone()).instrument(span)),
        ];
        Ok(Session { inner, tasks })
    }

    /// The session's state; `changed().await` on the receiver to follow reconnects.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// The server-assigned session id (changes when a reconnect had to create a new session).
    pub fn session_id(&self) -> NodeId {
        self.inner.ids.lock().session_id.clone()
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &EndpointDescription {
        &self.inner.endpoint
    }

    /// The session timeout the server granted; the keep-alive reads well within it.
    pub fn revised_timeout(&self) -> Duration {
        self.inner.ids.lock().revised_timeout
    }

    /// The security policy in use.
    pub fn security_policy(&self) -> SecurityPolicy {
        self.inner.channel_options.policy
    }

    /// The current channel (replaced on reconnect). Tests use it to break the connection.
    pub fn channel(&self) -> Arc<Client> {
        self.inner.channel.lock().clone()
    }

    /// CloseSession (deleting the subscriptions), then CloseSecureChannel.
    pub async fn close(mut self) -> Result<()> {
        self.inner.closing.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let client = self.inner.channel.lock().clone();
        let closed = self.inner.close_session_on(&client).await;
        self.inner.set_state(ConnectionState::Closed);
        self.inner.subscriptions.lock().close_all();
        let _ = client.shutdown().await;
        closed
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// The endpoint to use, the channel options for it, and the channel itself when the one GetEndpoints ran over
/// already is that endpoint's (no discovery: we connect to the named policy and mode, and only look up the
/// endpoint's user token policies).
async fn choose_endpoint(
    url: &str,
    options: &SessionOptions,
) -> Result<(EndpointDescription, ClientOptions, Option<Client>)> {
    let client = Client::connect_with(url, options.channel.clone()).await?;
    let discovered = match client.get_endpoints().await {
        Ok(endpoints) => endpoints,
        Err(e) => {
            let _ = client.close().await;
            return Err(e);
        }
    };
    let Some(filter) = &options.discovery else {
        let Some(endpoint) = find_endpoint(&discovered, options.channel.policy, options.channel.mode) else {
            let _ = client.close().await;
            return Err(Error::SecurityPolicyRejected(format!(
                "the server offers no endpoint with {} and {:?}",
                options.channel.policy.name(),
                options.channel.mode
            )));
        };
        let mut channel = options.channel.clone();
        if channel.expected_application_uri.is_none() {
            channel.expected_application_uri =
                Some(endpoint.server.application_uri.as_ref().to_owned()).filter(|u| !u.is_empty());
        }
        return Ok((endpoint, channel, Some(client)));
    };
    let _ = client.close().await;
    let endpoint = filter.select(&discovered)?;
    let mut channel = options.channel.clone();
    channel.policy = SecurityPolicy::from_uri(endpoint.security_policy_uri.as_ref(), filter.deprecated)?;
    channel.mode = SecurityMode::from_wire(endpoint.security_mode)?;
    channel.deprecated = filter.deprecated;
    // The discovery channel's pinned certificate (if any) was for discovery; the endpoint names its own, and
    // CreateSession's signature and serverEndpoints check that it is the server's.
    channel.server_certificate = endpoint.server_certificate.value.as_ref().filter(|c| !c.is_empty()).cloned();
    if channel.expected_application_uri.is_none() {
        channel.expected_application_uri =
            Some(endpoint.server.application_uri.as_ref().to_owned()).filter(|u| !u.is_empty());
    }
    tracing::info!(policy = channel.policy.name(), mode = ?channel.mode, level = endpoint.security_level, "endpoint chosen");
    Ok((endpoint, channel, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::asymmetric::tests::cached;
    use crate::client::TRANSPORT_PROFILE_URI;
    use opcua_types::ResponseHeader;

    fn answer(
        server_key: &dyn certvault::VaultKey,
        server_cert: &[u8],
        signed: (&[u8], &[u8]),
    ) -> CreateSessionResponse {
        let policy = SecurityPolicy::Basic256Sha256;
        CreateSessionResponse {
            response_header: ResponseHeader::default(),
            session_id: NodeId::new(1, 1),
            authentication_token: NodeId::new(1, 2),
            revised_session_timeout: 60_000.0,
            server_nonce: ByteString::from(vec![9; 32]),
            server_certificate: ByteString::from(server_cert.to_vec()),
            server_endpoints: Some(vec![EndpointDescription {
                security_policy_uri: policy.uri().into(),
                security_mode: SecurityMode::SignAndEncrypt.to_wire(),
                server_certificate: ByteString::from(server_cert.to_vec()),
                transport_profile_uri: TRANSPORT_PROFILE_URI.into(),
                ..Default::default()
            }]),
            server_software_certificates: None,
            server_signature: session::sign(server_key, policy, signed.0, signed.1).unwrap(),
            max_request_message_size: 0,
        }
    }

    #[test]
    fn create_session_answers_are_checked() {
        let (server_key, server_cert) = cached(2048, "server");
        let (_, client_cert) = cached(2048, "client");
        let (other_key, other_cert) = cached(2048, "other");
        let policy = SecurityPolicy::Basic256Sha256;
        let mode = SecurityMode::SignAndEncrypt;
        let nonce = [5u8; 32];
        let check = |r: &CreateSessionResponse| {
            check_create_session(r, policy, mode, Some(&server_cert), &client_cert, &nonce).map(|_| ())
        };

        let good = answer(server_key.as_ref(), &server_cert, (&client_cert, &nonce));
        check(&good).unwrap();

        // Signed over another nonce, or by another key: BadApplicationSignatureInvalid.
        let replayed = answer(server_key.as_ref(), &server_cert, (&client_cert, &[6u8; 32]));
        assert_eq!(check(&replayed).unwrap_err().status_code(), StatusCode::BadApplicationSignatureInvalid);
        let forged = answer(other_key.as_ref(), &server_cert, (&client_cert, &nonce));
        assert_eq!(check(&forged).unwrap_err().status_code(), StatusCode::BadApplicationSignatureInvalid);

        // Another certificate than the endpoint's, even with a valid signature by it.
        let swapped = answer(other_key.as_ref(), &other_cert, (&client_cert, &nonce));
        assert_eq!(check(&swapped).unwrap_err().status_code(), StatusCode::BadCertificateInvalid);

        // serverEndpoints without our endpoint: a downgrade.
        let mut downgraded = good.clone();
        if let Some(endpoints) = downgraded.server_endpoints.as_mut() {
            endpoints[0].security_mode = SecurityMode::Sign.to_wire();
        }
        assert_eq!(check(&downgraded).unwrap_err().status_code(), StatusCode::BadSecurityChecksFailed);

        // Policy None: nothing to verify.
        let unsigned = CreateSessionResponse { server_signature: Default::default(), ..good };
        assert!(check_create_session(&unsigned, SecurityPolicy::None, SecurityMode::None, None, &[], &nonce).is_ok());
    }
}
