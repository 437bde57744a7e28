//! The secure channel state machine, sans-IO, for both roles: OpenSecureChannel Issue and Renew, MSG and
//! CloseSecureChannel, token lifetimes, sequence-number checks and request-id matching.
//!
//! Bytes in ([`SecureChannel::handle_frame`], one whole frame as [`crate::transport::uacp::FrameDecoder`] cuts
//! them), bytes out ([`SecureChannel::poll_transmit`]), events out ([`SecureChannel::poll_event`]), and time in
//! ([`Now`], [`SecureChannel::poll_timeout`] / [`SecureChannel::handle_timeout`]). Message bodies are opaque here:
//! an encoded NodeId and service structure, as the session layer makes them. The UACP Hello/Acknowledge exchange
//! happens before, and its [`Negotiated`] limits are handed in.
//!
//! Vault calls (signing and per-block decryption of OPN chunks) happen inside `open`, `handle_frame` and
//! `handle_timeout`; a driver with a remote vault runs those on a blocking thread.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_types::{
    BinaryDecodable, BinaryEncodable, ByteString, ChannelSecurityToken, CloseSecureChannelRequest, ContextOwned,
    DateTime, NodeId, ObjectId, OpenSecureChannelRequest, OpenSecureChannelResponse, RequestHeader, ResponseHeader,
    SecurityTokenRequestType, ServiceFault, StatusCode,
};

use super::asymmetric::{open_open, open_open_vetted, seal_open, LocalIdentity, PeerCertificate};
use super::chunk::{split_body, Assembled, Reassembler, SequenceHeader};
use super::keys::ChannelKeys;
use super::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use super::sequence::{ReceiveSequence, SendSequence};
use super::symmetric::{peek_token_id, SymmetricOpener, SymmetricSealer};
use super::Role;
use crate::error::{Error, Result};
use crate::transport::uacp::{ChunkType, ErrorMessage, MessageHeader, MessageType, Negotiated};

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

/// The current time, passed in: a monotonic instant for deadlines and the wall clock for wire timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For deadlines.
    pub instant: Instant,
    /// For RequestHeader/ResponseHeader timestamps and ChannelSecurityToken.CreatedAt.
    pub utc: DateTime,
    /// `utc` as DateTime ticks. Private, so that it always matches `utc`: every `Now` comes from
    /// [`Now::system`] or [`Now::new`].
    ticks: i64,
}

impl Now {
    /// Reads both clocks; drivers call this, the protocol core never does.
    pub fn system() -> Self {
        let ticks = crate::read_codec::now_ticks();
        Now { instant: Instant::now(), utc: DateTime::from(ticks), ticks }
    }

    /// The time `instant` on the monotonic clock and `utc` on the wall clock.
    pub fn new(instant: Instant, utc: DateTime) -> Self {
        Now { instant, utc, ticks: utc.checked_ticks() }
    }

    /// `utc` as DateTime ticks, for codecs that write timestamps themselves ([`crate::read_codec`]): converting
    /// `utc` goes through `chrono` every time.
    pub fn ticks(&self) -> i64 {
        self.ticks
    }
}

/// Decides whether a peer's certificate is trusted (the PKI store implements this).
pub trait CertificateValidator: Send + Sync + fmt::Debug {
    /// Accepts or rejects `peer` for `policy`; the error's status code goes to the peer.
    fn validate(&self, peer: &PeerCertificate, policy: SecurityPolicy) -> Result<()>;
}

/// Trusts every certificate. For tests and for policy None only; never at a secured production endpoint.
#[derive(Debug, Default)]
pub struct AcceptAnyCertificate;

impl CertificateValidator for AcceptAnyCertificate {
    fn validate(&self, _: &PeerCertificate, _: SecurityPolicy) -> Result<()> {
        Ok(())
    }
}

/// Client-side settings of one channel.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The endpoint's policy.
    pub policy: SecurityPolicy,
    /// The endpoint's mode.
    pub mode: SecurityMode,
    /// Our certificate and vault key (needed unless the policy is None).
    pub identity: Option<LocalIdentity>,
    /// The server's certificate from the endpoint description, already trusted (needed unless None).
    pub server_certificate: Option<PeerCertificate>,
    /// Requested token lifetime in milliseconds.
    pub requested_lifetime_ms: u32,
    /// Whether Basic128Rsa15/Basic256 may be used.
    pub deprecated: DeprecatedPolicies,
}

/// Server-side settings of one channel.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Our certificate and vault key (needed for any secured endpoint).
    pub identity: Option<LocalIdentity>,
    /// The (policy, mode) pairs the endpoints offer.
    pub endpoints: Vec<(SecurityPolicy, SecurityMode)>,
    /// Whether Basic128Rsa15/Basic256 may be used.
    pub deprecated: DeprecatedPolicies,
    /// The channel id this channel gets (unique per server; the server's channel registry picks it).
    pub secure_channel_id: u32,
    /// Shortest token lifetime granted, in milliseconds.
    pub min_lifetime_ms: u32,
    /// Longest token lifetime granted, in milliseconds.
    pub max_lifetime_ms: u32,
    /// Trust decision on client certificates.
    pub validator: Arc<dyn CertificateValidator>,
}

/// What happened on the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A token was issued or renewed.
    Opened {
        /// The channel id.
        secure_channel_id: u32,
        /// The new token.
        token_id: u32,
        /// Its lifetime in milliseconds.
        revised_lifetime_ms: u32,
        /// False for Issue, true for Renew.
        renewed: bool,
    },
    /// (Server) a whole request arrived.
    Request {
        /// Its request id, to answer with.
        request_id: u32,
        /// Encoded NodeId + request structure.
        body: Vec<u8>,
    },
    /// (Client) a whole response arrived.
    Response {
        /// The request it answers.
        request_id: u32,
        /// Encoded NodeId + response structure.
        body: Vec<u8>,
    },
    /// The peer aborted a message; the channel stays open.
    Aborted {
        /// The request concerned.
        request_id: u32,
        /// The peer's status code.
        status: StatusCode,
        /// The peer's reason.
        reason: String,
    },
    /// The channel closed: the client sent CLO (Good), or the peer sent an Error message.
    Closed {
        /// Why.
        status: StatusCode,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Client before `open`, server before the first OPN.
    Idle,
    /// Client: OPN Issue sent.
    Opening,
    /// Tokens installed; MSG flows.
    Open,
    /// Nothing more is sent or accepted.
    Closed,
}

struct Token {
    id: u32,
    installed: Instant,
    lifetime: Duration,
    /// Shared with the messages queued for sending under this token (see [`Outgoing`]).
    sealer: Arc<SymmetricSealer>,
    opener: SymmetricOpener,
}

/// A MSG or CLO message queued for sending. Its chunks are sealed one at a time as the driver asks for them
/// ([`SecureChannel::poll_transmit`]), so the first chunks of a large message are on the wire while the rest is
/// still being sealed, and the peer opens them meanwhile. Token and sequence numbers are fixed when the message is
/// queued: the bytes are exactly those that sealing every chunk at once would give.
struct Outgoing {
    message_type: MessageType,
    request_id: u32,
    token_id: u32,
    sealer: Arc<SymmetricSealer>,
    body: Vec<u8>,
    /// The body's chunks still to seal: their end offsets in `body` and their sequence numbers, in order.
    pieces: VecDeque<(usize, u32)>,
    /// Start of the next chunk's body.
    offset: usize,
}

impl Outgoing {
    /// Seals the next chunk; `None` when none is left.
    fn next_chunk(&mut self, secure_channel_id: u32) -> Option<Result<Vec<u8>>> {
        let (end, sequence_number) = self.pieces.pop_front()?;
        let chunk_type = if self.pieces.is_empty() { ChunkType::Final } else { ChunkType::Intermediate };
        let piece = self.body.get(self.offset..end).unwrap_or_default();
        self.offset = end;
        let sequence = SequenceHeader { sequence_number, request_id: self.request_id };
        Some(self.sealer.seal(self.message_type, chunk_type, secure_channel_id, self.token_id, sequence, piece))
    }
}

/// A response that was not queued, with the reason and the body given back.
#[derive(Debug)]
pub struct Unsent<B> {
    /// Why: [`Error::ResponseTooLarge`] leaves the request outstanding for a fault; other errors end the channel.
    pub error: Error,
    /// The body as passed in.
    pub body: B,
}

impl<B> From<Unsent<B>> for Error {
    fn from(unsent: Unsent<B>) -> Error {
        unsent.error
    }
}

/// What waits to be written, in order: finished frames (OPN, ERR) and messages sealed on demand.
enum Queued {
    Frame(Vec<u8>),
    Message(Outgoing),
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("id", &self.id).field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl Token {
    /// Part 4 §5.5.2: a token is accepted for 25 % past its lifetime, so a late renewal does not cut the channel.
    fn expired(&self, now: Instant) -> bool {
        now > self.installed + self.lifetime + self.lifetime / 4
    }
}

#[derive(Debug)]
struct PendingOpen {
    request_id: u32,
    client_nonce: Vec<u8>,
    renew: bool,
}

#[derive(Debug)]
enum RoleState {
    Client { config: ClientConfig, pending_open: Option<PendingOpen>, outstanding: HashSet<u32>, next_request_id: u32 },
    Server { config: ServerConfig, outstanding: HashSet<u32>, next_token_id: u32, send_previous: bool },
}

/// One secure channel, client or server side.
pub struct SecureChannel {
    role: RoleState,
    state: State,
    limits: Negotiated,
    policy: SecurityPolicy,
    mode: SecurityMode,
    secure_channel_id: u32,
    peer: Option<PeerCertificate>,
    current: Option<Token>,
    previous: Option<Token>,
    send_sequence: SendSequence,
    receive_sequence: ReceiveSequence,
    reassembler: Reassembler,
    transmit: VecDeque<Queued>,
    events: VecDeque<Event>,
    context: ContextOwned,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureChannel")
            .field("role", &self.role_kind())
            .field("state", &self.state)
            .field("policy", &self.policy)
            .field("mode", &self.mode)
            .field("secure_channel_id", &self.secure_channel_id)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn random_nonce(len: usize) -> Result<Vec<u8>> {
    let mut nonce = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Crypto("random nonce"))?;
    Ok(nonce)
}

fn encoding_id(id: ObjectId) -> NodeId {
    NodeId::from(id as u32)
}

impl SecureChannel {
    /// A client channel; call [`SecureChannel::open`] next.
    pub fn client(config: ClientConfig, limits: Negotiated) -> Result<Self> {
        config.mode.check(config.policy)?;
        if !config.policy.is_none() && (config.identity.is_none() || config.server_certificate.is_none()) {
            return Err(Error::InvalidState("a secured policy needs our identity and the server certificate"));
        }
        let (policy, mode, peer) = (config.policy, config.mode, config.server_certificate.clone());
        let role = RoleState::Client { config, pending_open: None, outstanding: HashSet::new(), next_request_id: 1 };
        Ok(Self::new(role, limits, policy, mode, 0, peer))
    }

    /// A server channel waiting for the client's OpenSecureChannel.
    pub fn server(config: ServerConfig, limits: Negotiated) -> Self {
        let id = config.secure_channel_id;
        let role = RoleState::Server { config, outstanding: HashSet::new(), next_token_id: 1, send_previous: false };
        Self::new(role, limits, SecurityPolicy::None, SecurityMode::None, id, None)
    }

    fn new(
        role: RoleState,
        limits: Negotiated,
        policy: SecurityPolicy,
        mode: SecurityMode,
        secure_channel_id: u32,
        peer: Option<PeerCertificate>,
    ) -> Self {
        let mut context = ContextOwned::default();
        let options = context.options_mut();
        options.max_message_size = limits.max_receive_message_size as usize;
        options.max_chunk_count = limits.max_receive_chunk_count as usize;
        SecureChannel {
            role,
            state: State::Idle,
            limits,
            policy,
            mode,
            secure_channel_id,
            peer,
            current: None,
            previous: None,
            send_sequence: SendSequence::default(),
            receive_sequence: ReceiveSequence::default(),
            reassembler: Reassembler::new(limits.max_receive_message_size, limits.max_receive_chunk_count),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            context,
        }
    }

    fn role_kind(&self) -> Role {
        match self.role {
            RoleState::Client { .. } => Role::Client,
            RoleState::Server { .. } => Role::Server,
        }
    }

    /// The channel id (0 on a client until the server assigns it).
    pub fn secure_channel_id(&self) -> u32 {
        self.secure_channel_id
    }

    /// The negotiated policy (None until a server has received the first OPN).
    pub fn policy(&self) -> SecurityPolicy {
        self.policy
    }

    /// The negotiated mode.
    pub fn mode(&self) -> SecurityMode {
        self.mode
    }

    /// Our own certificate and key on this channel.
    pub fn local_identity(&self) -> Option<&LocalIdentity> {
        match &self.role {
            RoleState::Client { config, .. } => config.identity.as_ref(),
            RoleState::Server { config, .. } => config.identity.as_ref(),
        }
    }

    /// The peer's certificate (server: once the first OPN is verified).
    pub fn peer_certificate(&self) -> Option<&PeerCertificate> {
        self.peer.as_ref()
    }

    /// The id of the newest token.
    pub fn token_id(&self) -> Option<u32> {
        self.current.as_ref().map(|t| t.id)
    }

    /// True once tokens are installed and until the channel closes.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True after CLO, an Error message, or a fatal error.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The next frame to write to the transport. MSG and CLO chunks are sealed here, one per call.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.transmit.front_mut()? {
                Queued::Frame(_) => {
                    let Some(Queued::Frame(frame)) = self.transmit.pop_front() else { return None };
                    return Some(frame);
                }
                Queued::Message(message) => match message.next_chunk(self.secure_channel_id) {
                    None => {
                        self.transmit.pop_front();
                    }
                    Some(Ok(chunk)) => {
                        if message.pieces.is_empty() {
                            self.transmit.pop_front();
                        }
                        return Some(chunk);
                    }
                    Some(Err(e)) => {
                        // Sealing with keys that sealed before only fails if the cipher breaks: as when sending.
                        self.transmit.clear();
                        let _ = self.fail_if_send(Err(e));
                    }
                },
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`SecureChannel::handle_timeout`] wants to run: the client's renewal at 75 % of the token lifetime,
    /// the server's expiry of an unrenewed token.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let token = self.current.as_ref().filter(|_| self.state == State::Open)?;
        match &self.role {
            RoleState::Client { pending_open: Some(_), .. } => None,
            RoleState::Client { .. } => Some(token.installed + token.lifetime * 3 / 4),
            RoleState::Server { .. } => Some(token.installed + token.lifetime + token.lifetime / 4),
        }
    }

    /// Runs what is due at `now`: the client renews its token; the server closes a channel whose token expired.
    pub fn handle_timeout(&mut self, now: Now) -> Result<()> {
        let Some(due) = self.poll_timeout() else { return Ok(()) };
        if now.instant < due {
            return Ok(());
        }
        let result = match self.role {
            RoleState::Client { .. } => self.send_open(now, true),
            RoleState::Server { .. } => Err(Error::TokenUnknown(self.token_id().unwrap_or_default())),
        };
        self.fail_if(result, true)
    }

    /// (Client) sends the OpenSecureChannel Issue request.
    pub fn open(&mut self, now: Now) -> Result<()> {
        if self.state != State::Idle || self.role_kind() != Role::Client {
            return Err(Error::InvalidState("open is for a new client channel"));
        }
        let result = self.send_open(now, false);
        if result.is_ok() {
            self.state = State::Opening;
        }
        self.fail_if(result, true)
    }

    fn send_open(&mut self, now: Now, renew: bool) -> Result<()> {
        let RoleState::Client { config, next_request_id, .. } = &mut self.role else {
            return Err(Error::InvalidState("only clients open channels"));
        };
        let nonce = random_nonce(config.policy.nonce_len())?;
        let request_id = *next_request_id;
        *next_request_id = next_request_id.wrapping_add(1).max(1);
        let request = OpenSecureChannelRequest {
            request_header: RequestHeader::new(&NodeId::null(), &now.utc, request_id),
            client_protocol_version: 0,
            request_type: if renew { SecurityTokenRequestType::Renew } else { SecurityTokenRequestType::Issue },
            security_mode: config.mode.to_wire(),
            client_nonce: if nonce.is_empty() { ByteString::null() } else { ByteString::from(nonce.clone()) },
            requested_lifetime: config.requested_lifetime_ms,
        };
        let body = self.encode(ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary, &request)?;
        let RoleState::Client { config, pending_open, .. } = &mut self.role else {
            return Err(Error::InvalidState("only clients open channels"));
        };
        let sequence = SequenceHeader { sequence_number: self.send_sequence.next_number(), request_id };
        let chunk = seal_open(
            config.policy,
            config.identity.as_ref(),
            config.server_certificate.as_ref(),
            self.secure_channel_id,
            sequence,
            &body,
            self.limits.send_buffer_size as usize,
        )?;
        *pending_open = Some(PendingOpen { request_id, client_nonce: nonce, renew });
        self.transmit.push_back(Queued::Frame(chunk));
        Ok(())
    }

    fn encode<T: BinaryEncodable>(&self, id: ObjectId, value: &T) -> Result<Vec<u8>> {
        let ctx = self.context.context();
        let node = encoding_id(id);
        let mut out = Vec::with_capacity(node.byte_len(&ctx) + value.byte_len(&ctx));
        node.encode(&mut out, &ctx)?;
        value.encode(&mut out, &ctx)?;
        Ok(out)
    }

    fn decode_id(&self, body: &[u8]) -> Result<(ObjectId, usize)> {
        let ctx = self.context.context();
        let mut cursor = std::io::Cursor::new(body);
        let node = NodeId::decode(&mut cursor, &ctx)?;
        let id = node.as_object_id().map_err(|_| Error::Decoding(format!("unexpected body type {node}")))?;
        Ok((id, cursor.position() as usize))
    }

    fn decode_rest<T: BinaryDecodable>(&self, body: &[u8], at: usize) -> Result<T> {
        let ctx = self.context.context();
        let mut cursor = std::io::Cursor::new(body.get(at..).unwrap_or_default());
        let value = T::decode(&mut cursor, &ctx)?;
        Ok(value)
    }

    /// (Client) sends a request; returns its request id. `body` is the encoded NodeId + request structure.
    pub fn send_request<B: AsRef<[u8]> + Into<Vec<u8>>>(&mut self, body: B) -> Result<u32> {
        let RoleState::Client { outstanding, next_request_id, .. } = &mut self.role else {
            return Err(Error::InvalidState("only clients send requests"));
        };
        let request_id = *next_request_id;
        *next_request_id = next_request_id.wrapping_add(1).max(1);
        outstanding.insert(request_id);
        let result = self.send_message(MessageType::Message, request_id, body).map_err(|(e, _)| e);
        if result.is_err() {
            if let RoleState::Client { outstanding, .. } = &mut self.role {
                outstanding.remove(&request_id);
            }
        }
        self.fail_if_send(result).map(|()| request_id)
    }

    /// (Server) answers request `request_id`. `body` is the encoded NodeId + response structure; pass it by value
    /// (a `Vec<u8>`) and it is sealed from where it is, without a copy.
    ///
    /// A response over the client's MaxMessageSize or MaxChunkCount is [`Error::ResponseTooLarge`] and nothing is
    /// sent: the request stays outstanding and the body comes back in [`Unsent`], so the caller can answer it with a
    /// ServiceFault (BadResponseTooLarge) instead of leaving the client to time out.
    pub fn send_response<B: AsRef<[u8]> + Into<Vec<u8>>>(&mut self, request_id: u32, body: B) -> Result<(), Unsent<B>> {
        let RoleState::Server { outstanding, .. } = &mut self.role else {
            return Err(Unsent { error: Error::InvalidState("only servers send responses"), body });
        };
        if !outstanding.remove(&request_id) {
            return Err(Unsent { error: Error::RequestIdUnknown(request_id), body });
        }
        match self.send_message(MessageType::Message, request_id, body) {
            Ok(()) => Ok(()),
            Err((error @ Error::ResponseTooLarge { .. }, body)) => {
                if let RoleState::Server { outstanding, .. } = &mut self.role {
                    outstanding.insert(request_id);
                }
                Err(Unsent { error, body })
            }
            Err((error, body)) => match self.fail_if_send(Err(error)) {
                Ok(()) => Ok(()),
                Err(error) => Err(Unsent { error, body }),
            },
        }
    }

    /// (Client) sends CloseSecureChannel and closes. No response comes: the server closes the socket.
    pub fn close(&mut self, now: Now) -> Result<()> {
        if self.state != State::Open || self.role_kind() != Role::Client {
            self.state = State::Closed;
            return Ok(());
        }
        let RoleState::Client { next_request_id, .. } = &mut self.role else { return Ok(()) };
        let request_id = *next_request_id;
        *next_request_id = next_request_id.wrapping_add(1).max(1);
        let request =
            CloseSecureChannelRequest { request_header: RequestHeader::new(&NodeId::null(), &now.utc, request_id) };
        let body = self.encode(ObjectId::CloseSecureChannelRequest_Encoding_DefaultBinary, &request)?;
        let result = self.send_message(MessageType::CloseSecureChannel, request_id, body).map_err(|(e, _)| e);
        self.state = State::Closed;
        result
    }

    /// Queues a message; it is sealed chunk by chunk as the driver writes. A refused message gives its body back.
    fn send_message<B: AsRef<[u8]> + Into<Vec<u8>>>(
        &mut self,
        message_type: MessageType,
        request_id: u32,
        body: B,
    ) -> Result<(), (Error, B)> {
        let (ends, token_id, sealer) = match self.chunk_ends(body.as_ref()) {
            Ok(planned) => planned,
            Err(e) => return Err((e, body)),
        };
        let outgoing = Outgoing {
            message_type,
            request_id,
            token_id,
            sealer,
            body: body.into(),
            pieces: ends.into_iter().map(|end| (end, self.send_sequence.next_number())).collect(),
            offset: 0,
        };
        self.transmit.push_back(Queued::Message(outgoing));
        Ok(())
    }

    /// Where the chunks of `body` end and the token that seals them, or why it cannot be sent.
    fn chunk_ends(&self, body: &[u8]) -> Result<(VecDeque<usize>, u32, Arc<SymmetricSealer>)> {
        if self.state != State::Open {
            return Err(Error::InvalidState("the channel is not open"));
        }
        let use_previous = matches!(self.role, RoleState::Server { send_previous: true, .. });
        let token = if use_previous { self.previous.as_ref().or(self.current.as_ref()) } else { self.current.as_ref() };
        let token = token.ok_or(Error::InvalidState("no security token"))?;
        let max_body = token.sealer.layout().max_body_len(self.limits.send_buffer_size as usize)?;
        let pieces = split_body(
            body,
            max_body,
            self.limits.max_send_message_size,
            self.limits.max_send_chunk_count,
            self.role_kind(),
        )?;
        let mut end = 0;
        let mut ends = VecDeque::with_capacity(pieces.len());
        for piece in &pieces {
            end += piece.len();
            ends.push_back(end);
        }
        Ok((ends, token.id, token.sealer.clone()))
    }

    /// Processes one whole received frame (OPN, MSG, CLO, or ERR). On an error that ends the channel, the server
    /// queues an Error message for the peer and the channel closes; the error is returned either way.
    pub fn handle_frame(&mut self, frame: &[u8], now: Now) -> Result<()> {
        if self.state == State::Closed {
            return Err(Error::ChannelClosed);
        }
        let result = self.dispatch(frame, now);
        // Any failure of an OpenSecureChannel ends the channel; for MSG and CLO only the fatal kinds do.
        let fatal = match &result {
            Err(e) => {
                e.is_fatal()
                    || MessageHeader::decode(frame).ok().map(|h| h.message_type) == Some(MessageType::OpenSecureChannel)
            }
            Ok(()) => false,
        };
        self.fail_if(result, fatal)
    }

    /// Sending fails without harm for misuse (not open yet, too large); only a broken key or cipher ends the channel.
    fn fail_if_send(&mut self, result: Result<()>) -> Result<()> {
        let fatal = matches!(result, Err(Error::Crypto(_) | Error::Vault(_)));
        self.fail_if(result, fatal)
    }

    fn fail_if(&mut self, result: Result<()>, fatal: bool) -> Result<()> {
        if let Err(e) = &result {
            if fatal {
                tracing::debug!(channel = self.secure_channel_id, error = %e, "closing secure channel");
                if self.role_kind() == Role::Server && self.state != State::Closed {
                    self.transmit.push_back(Queued::Frame(ErrorMessage::from_error(e).encode()));
                }
                self.state = State::Closed;
            }
        }
        result
    }

    fn dispatch(&mut self, frame: &[u8], now: Now) -> Result<()> {
        let header = MessageHeader::decode(frame)?;
        match header.message_type {
            MessageType::OpenSecureChannel => match self.role_kind() {
                Role::Client => self.client_open_response(frame, now),
                Role::Server => self.server_open_request(frame, now),
            },
            MessageType::Message | MessageType::CloseSecureChannel => self.symmetric(frame, now),
            MessageType::Error => {
                let err = ErrorMessage::decode(frame)?;
                self.state = State::Closed;
                self.events.push_back(Event::Closed { status: err.error });
                Ok(())
            }
            other => Err(Error::MessageTypeInvalid(format!("{other} on an established connection"))),
        }
    }

    fn client_open_response(&mut self, frame: &[u8], now: Now) -> Result<()> {
        let RoleState::Client { config, pending_open, .. } = &mut self.role else {
            return Err(Error::InvalidState("not a client"));
        };
        let pending =
            pending_open.take().ok_or(Error::InvalidState("an OpenSecureChannel response nobody asked for"))?;
        let opened = open_open(frame, config.identity.as_ref(), config.deprecated)?;
        if opened.policy != config.policy {
            return Err(Error::SecurityPolicyRejected(format!("the server answered with {}", opened.policy)));
        }
        if let (Some(sender), Some(server)) = (&opened.sender, &config.server_certificate) {
            // Part 6 §6.7.4: the response must be signed by the certificate the request was encrypted to.
            if sender.certificate() != server.certificate() {
                return Err(Error::SecurityChecksFailed("the response is signed by another certificate"));
            }
        }
        self.receive_sequence.check(opened.sequence.sequence_number)?;
        if opened.sequence.request_id != pending.request_id {
            return Err(Error::RequestIdUnknown(opened.sequence.request_id));
        }
        let (id, at) = self.decode_id(&opened.body)?;
        if id == ObjectId::ServiceFault_Encoding_DefaultBinary {
            let fault: ServiceFault = self.decode_rest(&opened.body, at)?;
            let status = fault.response_header.service_result;
            return Err(Error::Remote { status, reason: "OpenSecureChannel failed".into() });
        }
        if id != ObjectId::OpenSecureChannelResponse_Encoding_DefaultBinary {
            return Err(Error::Decoding(format!("expected OpenSecureChannelResponse, got {id:?}")));
        }
        let response: OpenSecureChannelResponse = self.decode_rest(&opened.body, at)?;
        let status = response.response_header.service_result;
        if status.is_bad() {
            return Err(Error::Remote { status, reason: "OpenSecureChannel failed".into() });
        }
        let token = response.security_token;
        if pending.renew && token.channel_id != self.secure_channel_id {
            return Err(Error::SecureChannelUnknown(token.channel_id));
        }
        if opened.header.secure_channel_id != token.channel_id {
            return Err(Error::SecureChannelUnknown(opened.header.secure_channel_id));
        }
        let server_nonce = response.server_nonce.value.unwrap_or_default();
        let (sealer, opener) = if self.policy.is_none() {
            (SymmetricSealer::none(), SymmetricOpener::none())
        } else {
            let keys = ChannelKeys::derive(self.policy, &pending.client_nonce, &server_nonce)?;
            (
                SymmetricSealer::new(self.policy, self.mode, &keys.client)?,
                SymmetricOpener::new(self.policy, self.mode, &keys.server)?,
            )
        };
        self.secure_channel_id = token.channel_id;
        self.install(token, sealer, opener, now, pending.renew);
        Ok(())
    }

    fn install(
        &mut self,
        token: ChannelSecurityToken,
        sealer: SymmetricSealer,
        opener: SymmetricOpener,
        now: Now,
        renewed: bool,
    ) {
        let new = Token {
            id: token.token_id,
            installed: now.instant,
            lifetime: Duration::from_millis(token.revised_lifetime.into()),
            sealer: Arc::new(sealer),
            opener,
        };
        let old = self.current.replace(new);
        // On Issue there is no older token to keep; on Renew the old one stays valid until the new one is used.
        self.previous = if renewed { old } else { None };
        self.state = State::Open;
        self.events.push_back(Event::Opened {
            secure_channel_id: token.channel_id,
            token_id: token.token_id,
            revised_lifetime_ms: token.revised_lifetime,
            renewed,
        });
    }

    fn server_open_request(&mut self, frame: &[u8], now: Now) -> Result<()> {
        let RoleState::Server { config, .. } = &self.role else {
            return Err(Error::InvalidState("not a server"));
        };
        let renew = self.state == State::Open;
        // Everything decidable from the plaintext headers is decided before the vault decrypts a block.
        let vet = |sender: &PeerCertificate, policy: SecurityPolicy| {
            if !config.endpoints.iter().any(|(p, _)| *p == policy) {
                return Err(Error::SecurityPolicyRejected(format!("no endpoint offers {policy}")));
            }
            if !renew {
                return config.validator.validate(sender, policy);
            }
            match &self.peer {
                Some(peer) if peer.certificate() == sender.certificate() => Ok(()),
                _ => Err(Error::SecurityChecksFailed("the renewal is signed with another certificate")),
            }
        };
        let opened = open_open_vetted(frame, config.identity.as_ref(), config.deprecated, vet)?;
        let policy = opened.policy;
        if !config.endpoints.iter().any(|(p, _)| *p == policy) {
            return Err(Error::SecurityPolicyRejected(format!("no endpoint offers {policy}")));
        }
        if renew {
            if opened.header.secure_channel_id != self.secure_channel_id {
                return Err(Error::SecureChannelUnknown(opened.header.secure_channel_id));
            }
            if policy != self.policy {
                return Err(Error::SecurityPolicyRejected("a renewal cannot change the policy".into()));
            }
            if opened.sender.is_some() != self.peer.is_some() {
                return Err(Error::SecurityChecksFailed("the renewal is signed with another certificate"));
            }
        }
        self.receive_sequence.check(opened.sequence.sequence_number)?;
        let request_id = opened.sequence.request_id;
        let (id, at) = self.decode_id(&opened.body)?;
        if id != ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary {
            return Err(Error::Decoding(format!("expected OpenSecureChannelRequest, got {id:?}")));
        }
        let request: OpenSecureChannelRequest = self.decode_rest(&opened.body, at)?;
        let mode = SecurityMode::from_wire(request.security_mode)?;
        let RoleState::Server { config, next_token_id, send_previous, .. } = &mut self.role else {
            return Err(Error::InvalidState("not a server"));
        };
        if !config.endpoints.contains(&(policy, mode)) {
            return Err(Error::SecurityModeRejected(format!("no endpoint offers {policy} with {mode:?}")));
        }
        match (renew, request.request_type) {
            (false, SecurityTokenRequestType::Issue) | (true, SecurityTokenRequestType::Renew) => {}
            _ => return Err(Error::InvalidState("Issue on an open channel, or Renew before Issue")),
        }
        if renew && mode != self.mode {
            return Err(Error::SecurityModeRejected("a renewal cannot change the mode".into()));
        }
        let client_nonce = request.client_nonce.value.unwrap_or_default();
        let server_nonce = random_nonce(policy.nonce_len())?;
        let token = ChannelSecurityToken {
            channel_id: self.secure_channel_id,
            token_id: *next_token_id,
            created_at: now.utc,
            revised_lifetime: request
                .requested_lifetime
                .clamp(config.min_lifetime_ms, config.max_lifetime_ms.max(config.min_lifetime_ms)),
        };
        *next_token_id = next_token_id.wrapping_add(1).max(1);
        let (sealer, opener) = if policy.is_none() {
            (SymmetricSealer::none(), SymmetricOpener::none())
        } else {
            let keys = ChannelKeys::derive(policy, &client_nonce, &server_nonce)?;
            (SymmetricSealer::new(policy, mode, &keys.server)?, SymmetricOpener::new(policy, mode, &keys.client)?)
        };
        // After a renewal the server keeps answering with the old token until the client uses the new one.
        *send_previous = renew;
        let identity = config.identity.clone();
        let response = OpenSecureChannelResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                now.utc,
                request.request_header.request_handle,
                StatusCode::Good,
            ),
            server_protocol_version: 0,
            security_token: token.clone(),
            server_nonce: if server_nonce.is_empty() { ByteString::null() } else { ByteString::from(server_nonce) },
        };
        let body = self.encode(ObjectId::OpenSecureChannelResponse_Encoding_DefaultBinary, &response)?;
        let sequence = SequenceHeader { sequence_number: self.send_sequence.next_number(), request_id };
        let chunk = seal_open(
            policy,
            identity.as_ref(),
            opened.sender.as_ref(),
            self.secure_channel_id,
            sequence,
            &body,
            self.limits.send_buffer_size as usize,
        )?;
        self.transmit.push_back(Queued::Frame(chunk));
        if !renew {
            self.policy = policy;
            self.mode = mode;
            self.peer = opened.sender;
        }
        self.install(token, sealer, opener, now, renew);
        Ok(())
    }

    fn symmetric(&mut self, frame: &[u8], now: Now) -> Result<()> {
        let header = super::chunk::ChunkHeader::decode(frame)?;
        if self.state != State::Open {
            // No token has been issued, so no channel id is in use yet.
            return Err(Error::SecureChannelUnknown(header.secure_channel_id));
        }
        if header.secure_channel_id != self.secure_channel_id {
            return Err(Error::SecureChannelUnknown(header.secure_channel_id));
        }
        let token_id = peek_token_id(frame)?;
        let (token, is_current) = match (&self.current, &self.previous) {
            (Some(t), _) if t.id == token_id => (t, true),
            (_, Some(t)) if t.id == token_id => (t, false),
            _ => return Err(Error::TokenUnknown(token_id)),
        };
        if token.expired(now.instant) {
            return Err(Error::TokenUnknown(token_id));
        }
        let opened = token.opener.open(frame)?;
        self.receive_sequence.check(opened.sequence.sequence_number)?;
        if is_current && self.previous.is_some() {
            // The peer uses the new token: the old one is done, and the server may now send with the new one.
            self.previous = None;
            if let RoleState::Server { send_previous, .. } = &mut self.role {
                *send_previous = false;
            }
        }
        let assembled =
            self.reassembler.push(header.message_type, header.chunk_type, opened.sequence.request_id, opened.body())?;
        let Some(assembled) = assembled else { return Ok(()) };
        match (assembled, &mut self.role) {
            (Assembled::Complete { message_type: MessageType::CloseSecureChannel, .. }, RoleState::Server { .. }) => {
                self.state = State::Closed;
                self.events.push_back(Event::Closed { status: StatusCode::Good });
            }
            (Assembled::Complete { message_type: MessageType::CloseSecureChannel, .. }, RoleState::Client { .. }) => {
                return Err(Error::MessageTypeInvalid("a server does not send CLO".into()));
            }
            (Assembled::Complete { request_id, body, .. }, RoleState::Server { outstanding, .. }) => {
                outstanding.insert(request_id);
                self.events.push_back(Event::Request { request_id, body });
            }
            (Assembled::Complete { request_id, body, .. }, RoleState::Client { outstanding, .. }) => {
                if !outstanding.remove(&request_id) {
                    return Err(Error::RequestIdUnknown(request_id));
                }
                self.events.push_back(Event::Response { request_id, body });
            }
            (Assembled::Aborted { request_id, status, reason }, role) => {
                match role {
                    RoleState::Client { outstanding, .. } | RoleState::Server { outstanding, .. } => {
                        outstanding.remove(&request_id);
                    }
                }
                self.events.push_back(Event::Aborted { request_id, status, reason });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests_support {
    //! A client and a server channel wired back to back in memory.
    use super::*;
    use crate::channel::asymmetric::tests::cached;
    use crate::transport::uacp::Limits;

    pub(super) fn limits() -> (Negotiated, Negotiated) {
        let l = Limits::default();
        let hello = l.hello("opc.tcp://localhost:4840").unwrap();
        let (ack, server) = l.acknowledge(&hello).unwrap();
        (l.accept_acknowledge(&hello, &ack).unwrap(), server)
    }

    pub(super) fn identity(bits: u32, name: &'static str) -> LocalIdentity {
        let (key, cert) = cached(bits, name);
        LocalIdentity::new(key, cert).unwrap()
    }

    #[derive(Debug)]
    pub(super) struct RejectAll;

    impl CertificateValidator for RejectAll {
        fn validate(&self, _: &PeerCertificate, _: SecurityPolicy) -> Result<()> {
            Err(Error::CertificateRejected {
                status: StatusCode::BadCertificateUntrusted,
                reason: "not trusted".into(),
            })
        }
    }

    pub(super) struct Setup {
        pub(super) policy: SecurityPolicy,
        pub(super) mode: SecurityMode,
        pub(super) server_bits: u32,
        pub(super) endpoints: Vec<(SecurityPolicy, SecurityMode)>,
        pub(super) validator: Arc<dyn CertificateValidator>,
    }

    impl Setup {
        pub(super) fn new(policy: SecurityPolicy, mode: SecurityMode) -> Self {
            Setup {
                policy,
                mode,
                server_bits: 2048,
                endpoints: vec![(policy, mode)],
                validator: Arc::new(AcceptAnyCertificate),
            }
        }

        pub(super) fn build(&self) -> (SecureChannel, SecureChannel) {
            let (cl, sl) = limits();
            let server_id = identity(self.server_bits, "server");
            let secured = !self.policy.is_none();
            let client = SecureChannel::client(
                ClientConfig {
                    policy: self.policy,
                    mode: self.mode,
                    identity: secured.then(|| identity(2048, "client")),
                    server_certificate: secured.then(|| PeerCertificate::from_der(server_id.certificate()).unwrap()),
                    requested_lifetime_ms: 10_000,
                    deprecated: DeprecatedPolicies::Reject,
                },
                cl,
            )
            .unwrap();
            let server = SecureChannel::server(
                ServerConfig {
                    identity: Some(server_id),
                    endpoints: self.endpoints.clone(),
                    deprecated: DeprecatedPolicies::Reject,
                    secure_channel_id: 42,
                    min_lifetime_ms: 1_000,
                    max_lifetime_ms: 3_600_000,
                    validator: self.validator.clone(),
                },
                sl,
            );
            (client, server)
        }
    }

    pub(super) fn at(base: Instant, ms: u64) -> Now {
        Now::new(base + Duration::from_millis(ms), DateTime::now())
    }

    pub(super) fn pump(from: &mut SecureChannel, to: &mut SecureChannel, now: Now) -> Result<()> {
        while let Some(frame) = from.poll_transmit() {
            to.handle_frame(&frame, now)?;
        }
        Ok(())
    }

    pub(super) fn open(setup: &Setup, base: Instant) -> (SecureChannel, SecureChannel) {
        let (mut client, mut server) = setup.build();
        client.open(at(base, 0)).unwrap();
        pump(&mut client, &mut server, at(base, 0)).unwrap();
        pump(&mut server, &mut client, at(base, 0)).unwrap();
        assert!(client.is_open() && server.is_open());
        let expected =
            Event::Opened { secure_channel_id: 42, token_id: 1, revised_lifetime_ms: 10_000, renewed: false };
        assert_eq!(client.poll_event(), Some(expected.clone()));
        assert_eq!(server.poll_event(), Some(expected));
        (client, server)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    fn exchange(client: &mut SecureChannel, server: &mut SecureChannel, now: Now, len: usize) {
        let request: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let id = client.send_request(request.as_slice()).unwrap();
        pump(client, server, now).unwrap();
        assert_eq!(server.poll_event(), Some(Event::Request { request_id: id, body: request.clone() }));
        let response: Vec<u8> = request.iter().rev().copied().collect();
        server.send_response(id, response.as_slice()).unwrap();
        pump(server, client, now).unwrap();
        assert_eq!(client.poll_event(), Some(Event::Response { request_id: id, body: response }));
    }

    #[test]
    fn open_exchange_and_close_for_every_policy() {
        let base = Instant::now();
        let mut cases = vec![
            Setup::new(SecurityPolicy::None, SecurityMode::None),
            Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt),
            Setup::new(SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::Sign),
            Setup::new(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
        ];
        let mut big = Setup::new(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::Sign);
        big.server_bits = 4096;
        cases.push(big);
        for setup in cases {
            let (mut client, mut server) = open(&setup, base);
            assert_eq!(server.policy(), setup.policy);
            assert_eq!(server.mode(), setup.mode);
            for len in [0, 10, 200_000] {
                exchange(&mut client, &mut server, at(base, 10), len);
            }
            client.close(at(base, 20)).unwrap();
            assert!(client.is_closed());
            pump(&mut client, &mut server, at(base, 20)).unwrap();
            assert_eq!(server.poll_event(), Some(Event::Closed { status: StatusCode::Good }));
            assert!(server.is_closed());
        }
    }

    #[test]
    fn renewal_at_75_percent_and_old_token_until_the_new_one_is_used() {
        let base = Instant::now();
        let setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        let (mut client, mut server) = open(&setup, base);
        assert_eq!(client.poll_timeout(), Some(base + Duration::from_millis(7_500)));
        client.handle_timeout(at(base, 7_000)).unwrap();
        assert!(client.poll_transmit().is_none(), "too early to renew");
        client.handle_timeout(at(base, 7_500)).unwrap();
        let renew = client.poll_transmit().unwrap();
        assert_eq!(client.poll_timeout(), None, "no second renewal while one is pending");
        server.handle_frame(&renew, at(base, 7_500)).unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Opened { token_id: 2, renewed: true, .. })));
        // The client still uses token 1 (it has not seen the response); the server accepts it and answers with 1.
        exchange_without_response_delivery(&mut client, &mut server, at(base, 7_600));
        pump(&mut server, &mut client, at(base, 7_600)).unwrap();
        assert!(matches!(client.poll_event(), Some(Event::Opened { token_id: 2, renewed: true, .. })));
        assert!(matches!(client.poll_event(), Some(Event::Response { .. })));
        assert_eq!(client.token_id(), Some(2));
        // Now the client sends with token 2; the server switches to it and drops token 1.
        exchange(&mut client, &mut server, at(base, 8_000), 100);
        assert!(server.previous.is_none() && client.previous.is_none());
        assert!(matches!(server.role, RoleState::Server { send_previous: false, .. }));
        // Well past the first token's lifetime, the second keeps working.
        exchange(&mut client, &mut server, at(base, 14_000), 100);
    }

    /// Sends a request and queues the server's response without delivering it.
    fn exchange_without_response_delivery(client: &mut SecureChannel, server: &mut SecureChannel, now: Now) {
        let id = client.send_request(b"during renewal").unwrap();
        let frame = client.poll_transmit().unwrap();
        assert_eq!(peek_token_id(&frame).unwrap(), 1);
        server.handle_frame(&frame, now).unwrap();
        assert!(matches!(server.poll_event(), Some(Event::Request { .. })));
        server.send_response(id, b"ok").unwrap();
    }

    fn expect_closed_with(server: &mut SecureChannel, result: Result<()>, status: StatusCode) {
        assert_eq!(result.unwrap_err().status_code(), status);
        assert!(server.is_closed());
        let err = ErrorMessage::decode(&server.poll_transmit().expect("an Error message")).unwrap();
        assert_eq!(err.error, status);
    }

    #[test]
    fn replayed_chunk_closes_the_channel_with_an_error_message() {
        let base = Instant::now();
        let (mut client, mut server) = open(&Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::Sign), base);
        client.send_request(b"once").unwrap();
        let frame = client.poll_transmit().unwrap();
        server.handle_frame(&frame, at(base, 1)).unwrap();
        let r = server.handle_frame(&frame, at(base, 1));
        expect_closed_with(&mut server, r, StatusCode::BadSequenceNumberInvalid);
        assert_eq!(
            server.handle_frame(&frame, at(base, 1)).unwrap_err().status_code(),
            StatusCode::BadSecureChannelClosed
        );
    }

    #[test]
    fn sequence_gap_is_rejected() {
        let base = Instant::now();
        let (mut client, mut server) =
            open(&Setup::new(SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::SignAndEncrypt), base);
        client.send_request(b"lost").unwrap();
        client.send_request(b"second").unwrap();
        let _lost = client.poll_transmit().unwrap();
        let second = client.poll_transmit().unwrap();
        let r = server.handle_frame(&second, at(base, 1));
        expect_closed_with(&mut server, r, StatusCode::BadSequenceNumberInvalid);
    }

    #[test]
    fn unknown_token_and_unknown_channel_are_rejected() {
        let base = Instant::now();
        let setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        let (mut client, mut server) = open(&setup, base);
        client.send_request(b"x").unwrap();
        let frame = client.poll_transmit().unwrap();
        let mut bad_token = frame.clone();
        bad_token[12] ^= 0x10;
        let r = server.handle_frame(&bad_token, at(base, 1));
        expect_closed_with(&mut server, r, StatusCode::BadSecureChannelTokenUnknown);

        let (mut client, mut server) = open(&setup, base);
        client.send_request(b"x").unwrap();
        let mut bad_channel = client.poll_transmit().unwrap();
        bad_channel[8] ^= 0x01;
        let r = server.handle_frame(&bad_channel, at(base, 1));
        expect_closed_with(&mut server, r, StatusCode::BadTcpSecureChannelUnknown);
    }

    #[test]
    fn renewal_signed_with_another_certificate_is_rejected() {
        let base = Instant::now();
        let setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        let (client, mut server) = open(&setup, base);
        let (cl, _) = limits();
        let mut rogue = SecureChannel::client(
            ClientConfig {
                policy: setup.policy,
                mode: setup.mode,
                identity: Some(identity(2048, "other")),
                server_certificate: client.peer.clone(),
                requested_lifetime_ms: 10_000,
                deprecated: DeprecatedPolicies::Reject,
            },
            cl,
        )
        .unwrap();
        rogue.secure_channel_id = client.secure_channel_id;
        rogue.send_sequence = client.send_sequence.clone();
        rogue.send_open(at(base, 5), true).unwrap();
        let frame = rogue.poll_transmit().unwrap();
        let r = server.handle_frame(&frame, at(base, 5));
        expect_closed_with(&mut server, r, StatusCode::BadSecurityChecksFailed);
    }

    #[test]
    fn policies_and_modes_not_offered_are_rejected() {
        let base = Instant::now();
        let mut setup = Setup::new(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt);
        setup.endpoints = vec![(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt)];
        let (mut client, mut server) = setup.build();
        client.open(at(base, 0)).unwrap();
        let r = pump(&mut client, &mut server, at(base, 0));
        expect_closed_with(&mut server, r, StatusCode::BadSecurityPolicyRejected);

        setup.endpoints = vec![(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::Sign)];
        let (mut client, mut server) = setup.build();
        client.open(at(base, 0)).unwrap();
        let r = pump(&mut client, &mut server, at(base, 0));
        expect_closed_with(&mut server, r, StatusCode::BadSecurityModeRejected);
        // The client learns the status from the Error message.
        let err = Event::Closed { status: StatusCode::BadSecurityModeRejected };
        let (mut client, mut server) = setup.build();
        client.open(at(base, 0)).unwrap();
        let _ = pump(&mut client, &mut server, at(base, 0));
        pump(&mut server, &mut client, at(base, 0)).unwrap();
        assert_eq!(client.poll_event(), Some(err));
        assert!(client.is_closed());
    }

    #[test]
    fn untrusted_client_certificate_gets_the_validators_status() {
        let base = Instant::now();
        let mut setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        setup.validator = Arc::new(RejectAll);
        let (mut client, _) = setup.build();
        // The server's key counts its vault calls: a client refused anyway must not cost an RSA decryption.
        let (key, server_id) = crate::channel::asymmetric::tests::counting(2048, "server");
        let (_, sl) = limits();
        let mut server = SecureChannel::server(
            ServerConfig {
                identity: Some(server_id),
                endpoints: setup.endpoints.clone(),
                deprecated: DeprecatedPolicies::Reject,
                secure_channel_id: 42,
                min_lifetime_ms: 1_000,
                max_lifetime_ms: 3_600_000,
                validator: setup.validator.clone(),
            },
            sl,
        );
        client.open(at(base, 0)).unwrap();
        let r = pump(&mut client, &mut server, at(base, 0));
        expect_closed_with(&mut server, r, StatusCode::BadCertificateUntrusted);
        assert_eq!(key.decrypts.load(std::sync::atomic::Ordering::SeqCst), 0, "decrypted before the trust check");
        assert_eq!(key.signs.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn client_certificates_are_judged_by_the_pki_store() {
        use crate::pki::{PkiStore, Role, StoreValidator, ValidationOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(PkiStore::create_or_open(dir.path()).unwrap());
        let base = Instant::now();
        let mut setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        setup.validator = Arc::new(StoreValidator::new(store.clone(), Role::Client, ValidationOptions::default()));

        // Unknown client: refused with the code that does not reveal the trust list, and kept for the operator.
        let (mut client, mut server) = setup.build();
        client.open(at(base, 0)).unwrap();
        let r = pump(&mut client, &mut server, at(base, 0));
        expect_closed_with(&mut server, r, StatusCode::BadSecurityChecksFailed);
        let rejected: Vec<_> = std::fs::read_dir(dir.path().join("rejected/certs")).unwrap().flatten().collect();
        assert_eq!(rejected.len(), 1);

        // The operator trusts it by moving the file; the next channel opens without any restart.
        let file = rejected[0].path();
        std::fs::rename(&file, dir.path().join("trusted/certs").join(file.file_name().unwrap())).unwrap();
        open(&setup, base);
    }

    #[test]
    fn response_to_an_unknown_request_is_reported_but_keeps_the_channel() {
        let base = Instant::now();
        let (mut client, mut server) = open(&Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::Sign), base);
        if let RoleState::Server { outstanding, .. } = &mut server.role {
            outstanding.insert(99);
        }
        server.send_response(99, b"stray").unwrap();
        let frame = server.poll_transmit().unwrap();
        assert_eq!(client.handle_frame(&frame, at(base, 1)).unwrap_err().status_code(), StatusCode::BadUnknownResponse);
        assert!(client.is_open());
        exchange(&mut client, &mut server, at(base, 2), 5);
        // A server cannot answer what it was not asked.
        assert!(server.send_response(1234, b"?").is_err());
        assert!(server.is_open());
    }

    #[test]
    fn server_closes_a_channel_whose_token_expired_unrenewed() {
        let base = Instant::now();
        let (mut client, mut server) = open(&Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::Sign), base);
        assert_eq!(server.poll_timeout(), Some(base + Duration::from_millis(12_500)));
        server.handle_timeout(at(base, 12_000)).unwrap();
        assert!(server.is_open());
        let r = server.handle_timeout(at(base, 12_500));
        expect_closed_with(&mut server, r, StatusCode::BadSecureChannelTokenUnknown);
        // And a client that lets its token expire finds its messages refused.
        let (mut client2, mut server2) = open(&Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::Sign), base);
        client2.send_request(b"late").unwrap();
        let r = pump(&mut client2, &mut server2, at(base, 13_000));
        expect_closed_with(&mut server2, r, StatusCode::BadSecureChannelTokenUnknown);
        let _ = client.close(at(base, 1));
    }

    #[test]
    fn messages_before_open_and_garbage_frames_are_refused() {
        let base = Instant::now();
        let setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        let (mut client, mut server) = setup.build();
        assert!(client.send_request(b"too early").is_err());
        assert!(!client.is_closed(), "misuse does not close the channel");
        let r = server.handle_frame(b"MSGF\x18\0\0\0\x2a\0\0\0\x01\0\0\0\x01\0\0\0\x01\0\0\0", at(base, 0));
        expect_closed_with(&mut server, r, StatusCode::BadTcpSecureChannelUnknown);
        let (_, mut server) = setup.build();
        let r = server.handle_frame(b"HELF\x20\0\0\0", at(base, 0));
        assert!(r.is_err());
        assert!(server.is_closed());
    }
}

#[cfg(test)]
mod robustness {
    //! Mutated and random inputs: every one must come back as an error, never as a panic.
    use super::tests_support::*;
    use super::*;
    use crate::channel::asymmetric::AsymmetricSecurityHeader;
    use crate::channel::chunk::decode_abort_body;
    use crate::transport::uacp::{FrameDecoder, UacpMessage};

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut XorShift, valid: &[u8]) -> Vec<u8> {
        let mut v = valid.to_vec();
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
            }
            1 => v.truncate(rng.below(v.len())),
            2 => v.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
            _ => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
        }
        // Keep MessageSize consistent half of the time, so the deeper layers are reached.
        if v.len() >= 8 && rng.below(2) == 0 {
            let n = v.len() as u32;
            v[4..8].copy_from_slice(&n.to_le_bytes());
        }
        v
    }

    #[test]
    fn mutated_open_requests_never_panic() {
        let base = Instant::now();
        let setup = Setup::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
        let (mut client, _) = setup.build();
        client.open(at(base, 0)).unwrap();
        let valid = client.poll_transmit().unwrap();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut rejected = 0;
        for _ in 0..150 {
            let (_, mut server) = setup.build();
            let input = mutate(&mut rng, &valid);
            if server.handle_frame(&input, at(base, 0)).is_err() {
                rejected += 1;
                assert!(server.is_closed());
            }
        }
        assert!(rejected > 140, "almost every mutation must be refused ({rejected})");
    }

    #[test]
    fn mutated_and_random_messages_never_panic() {
        let base = Instant::now();
        let setup = Setup::new(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt);
        let (mut client, mut server) = open(&setup, base);
        client.send_request([7u8; 100].as_slice()).unwrap();
        let valid = client.poll_transmit().unwrap();
        let token = server.current.as_ref().unwrap();
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for _ in 0..2000 {
            let input = mutate(&mut rng, &valid);
            if input != valid {
                assert!(token.opener.open(&input).is_err());
            }
            let _ = UacpMessage::decode(&input);
            let _ = AsymmetricSecurityHeader::decode(&input);
            let _ = decode_abort_body(&input);
            let mut dec = FrameDecoder::new(65535);
            dec.push(&input);
            while let Ok(Some(_)) = dec.next_frame() {}
            let noise: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            let _ = UacpMessage::decode(&noise);
            let _ = crate::channel::chunk::ChunkHeader::decode(&noise);
        }
        // The untouched chunk still opens: the server's state was never touched by the above.
        server.handle_frame(&valid, at(base, 1)).unwrap();
    }
}
