//! The connection phase of UA TCP, sans-IO: Hello/Acknowledge (or Error) before the secure channel, for both roles.
//!
//! [`ServerConnection`] is one accepted socket's whole protocol state: it cuts the byte stream into frames, expects a
//! Hello first (anything else is `BadTcpMessageTypeInvalid`), checks the EndpointUrl (`BadTcpEndpointUrlInvalid`),
//! answers with an Acknowledge carrying the negotiated limits, and from then on hands every frame to a server
//! [`SecureChannel`]. Every failure queues an Error message and closes. A Hello that does not come within the
//! configured timeout closes the connection, so silent sockets cannot pin resources.
//!
//! [`ClientHandshake`] is the client's side of the same exchange: it sends the Hello and turns the answer into
//! [`Negotiated`] limits or the server's status code.
//!
//! The driver decides where each step runs: [`ServerConnection::peek_kind`] tells it whether the next frame is an
//! OpenSecureChannel (vault work, so it moves the connection to a blocking thread) or not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::uacp::{ErrorMessage, Frame, FrameDecoder, Hello, Limits, MessageType, Negotiated, UacpMessage};
use super::url::OpcTcpUrl;
use crate::channel::secure_channel::{Event, Now, SecureChannel, ServerConfig};
use crate::error::{Error, Result};

/// Default time a client has to send its Hello after connecting.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the server's connection phase.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Our transport limits.
    pub limits: Limits,
    /// The paths of the endpoint URLs we serve (`/` for `opc.tcp://host:port/`); a Hello for any other path is
    /// refused. Hosts and ports are not compared: a client may reach us by any name or address.
    pub endpoint_paths: Vec<String>,
    /// How long a new connection may stay silent before its Hello.
    pub hello_timeout: Duration,
}

impl ConnectionConfig {
    /// Accepts Hellos for the endpoint URLs `urls`, with default limits and hello timeout.
    pub fn for_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let endpoint_paths =
            urls.into_iter().map(|u| OpcTcpUrl::parse(u).map(|u| u.path)).collect::<Result<Vec<_>>>()?;
        Ok(ConnectionConfig { limits: Limits::default(), endpoint_paths, hello_timeout: DEFAULT_HELLO_TIMEOUT })
    }

    fn check_endpoint_url(&self, url: &str) -> Result<()> {
        let parsed = OpcTcpUrl::parse(url)?;
        if !self.endpoint_paths.contains(&parsed.path) {
            return Err(Error::EndpointUrlInvalid(format!("no endpoint at {url:?}")));
        }
        Ok(())
    }
}

enum Phase {
    /// Before the Hello; the secure channel's settings wait here until the limits are known.
    AwaitingHello { deadline: Instant, channel: Box<ServerConfig> },
    /// After the Acknowledge.
    Channel(Box<SecureChannel>),
    /// After an Error message, a close, or the hello timeout.
    Closed,
}

/// One accepted connection, server side, from the first byte to the close.
pub struct ServerConnection {
    config: ConnectionConfig,
    decoder: FrameDecoder,
    /// A frame (or framing error) taken off the decoder but not yet processed; see [`ServerConnection::peek_kind`].
    pending: Option<Result<Frame>>,
    phase: Phase,
    transmit: VecDeque<Vec<u8>>,
    hello: Option<Hello>,
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match &self.phase {
            Phase::AwaitingHello { .. } => "awaiting hello",
            Phase::Channel(_) => "channel",
            Phase::Closed => "closed",
        };
        f.debug_struct("ServerConnection").field("phase", &phase).finish_non_exhaustive()
    }
}

impl ServerConnection {
    /// A connection accepted at `now`; `channel` configures the secure channel that follows the Hello.
    pub fn new(config: ConnectionConfig, channel: ServerConfig, now: Instant) -> Self {
        let deadline = now + config.hello_timeout;
        ServerConnection {
            decoder: FrameDecoder::new(config.limits.receive_buffer_size),
            config,
            pending: None,
            phase: Phase::AwaitingHello { deadline, channel: Box::new(channel) },
            transmit: VecDeque::new(),
            hello: None,
        }
    }

    /// Appends bytes read from the socket.
    pub fn receive(&mut self, data: &[u8]) {
        self.decoder.push(data);
    }

    /// The type of the next whole frame, `None` when more bytes are needed or the connection is closed. A framing
    /// error reports as `Some(MessageType::Error)`: processing it is cheap and closes the connection.
    pub fn peek_kind(&mut self) -> Option<MessageType> {
        if self.is_closed() {
            return None;
        }
        if self.pending.is_none() {
            self.pending = self.decoder.next_frame().transpose();
        }
        match self.pending.as_ref()? {
            Ok(frame) => Some(frame.header.message_type),
            Err(_) => Some(MessageType::Error),
        }
    }

    /// Processes the next whole frame, if any. Returns `Ok(false)` when there was none. On a failure the Error
    /// message is queued, the connection is closed, and the error is returned for the log.
    pub fn process_next(&mut self, now: Now) -> Result<bool> {
        if self.peek_kind().is_none() {
            return Ok(false);
        }
        let Some(next) = self.pending.take() else { return Ok(false) };
        let result = match next {
            // After a framing error the stream cannot be resynchronised, whatever the phase.
            Err(e) => {
                self.abort(&e);
                Err(e)
            }
            Ok(frame) => {
                let result = self.process(frame, now);
                if let Err(e) = &result {
                    self.fail(e);
                }
                result
            }
        };
        result.map(|()| true)
    }

    /// Queues the Error message for `err` after whatever the channel still had to send, and closes.
    fn abort(&mut self, err: &Error) {
        tracing::debug!(error = %err, "aborting connection");
        if let Phase::Channel(channel) = &mut self.phase {
            while let Some(out) = channel.poll_transmit() {
                self.transmit.push_back(out);
            }
        }
        if !matches!(self.phase, Phase::Closed) {
            self.transmit.push_back(ErrorMessage::from_error(err).encode());
        }
        self.phase = Phase::Closed;
    }

    fn process(&mut self, frame: Frame, now: Now) -> Result<()> {
        match &mut self.phase {
            Phase::AwaitingHello { .. } => self.hello(&frame.bytes),
            // The channel queues its own Error message and closes itself on fatal errors.
            Phase::Channel(channel) => channel.handle_frame(&frame.bytes, now),
            Phase::Closed => Err(Error::ChannelClosed),
        }
    }

    fn hello(&mut self, frame: &[u8]) -> Result<()> {
        let hello = match UacpMessage::decode(frame) {
            Ok(UacpMessage::Hello(hello)) => hello,
            Ok(other) => return Err(Error::MessageTypeInvalid(format!("{other:?} before Hello"))),
            // An OPN/MSG/CLO before the Hello decodes as "not a UACP message": the same status.
            Err(e) => return Err(e),
        };
        self.config.check_endpoint_url(&hello.endpoint_url)?;
        let (ack, negotiated) = self.config.limits.acknowledge(&hello)?;
        let Phase::AwaitingHello { channel, .. } = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return Err(Error::InvalidState("Hello after Hello"));
        };
        self.decoder.set_max_frame(negotiated.receive_buffer_size);
        self.transmit.push_back(ack.encode());
        self.phase = Phase::Channel(Box::new(SecureChannel::server(*channel, negotiated)));
        self.hello = Some(hello);
        Ok(())
    }

    fn fail(&mut self, err: &Error) {
        // In the channel phase the channel has already queued its Error message and closed itself if the error is
        // fatal; errors that are not (a stray response id) leave it open.
        if matches!(self.phase, Phase::AwaitingHello { .. }) {
            self.abort(err);
        }
    }

    /// The next bytes to write: our Acknowledge/Error, then the channel's chunks.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Some(out) = self.transmit.pop_front() {
            return Some(out);
        }
        match &mut self.phase {
            Phase::Channel(channel) => channel.poll_transmit(),
            _ => None,
        }
    }

    /// The next secure-channel event.
    pub fn poll_event(&mut self) -> Option<Event> {
        match &mut self.phase {
            Phase::Channel(channel) => channel.poll_event(),
            _ => None,
        }
    }

    /// When [`ServerConnection::handle_timeout`] wants to run: the hello deadline, then the token expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::AwaitingHello { deadline, .. } => Some(*deadline),
            Phase::Channel(channel) => channel.poll_timeout(),
            Phase::Closed => None,
        }
    }

    /// Runs what is due: a connection still without Hello is dropped (no Error message: a silent peer is not
    /// listening); an unrenewed token closes the channel with its Error message.
    pub fn handle_timeout(&mut self, now: Now) -> Result<()> {
        match &mut self.phase {
            Phase::AwaitingHello { deadline, .. } if now.instant >= *deadline => {
                self.phase = Phase::Closed;
                Err(Error::Timeout("no Hello"))
            }
            Phase::Channel(channel) => channel.handle_timeout(now),
            _ => Ok(()),
        }
    }

    /// The secure channel, once the Hello is acknowledged.
    pub fn channel(&self) -> Option<&SecureChannel> {
        match &self.phase {
            Phase::Channel(channel) => Some(channel),
            _ => None,
        }
    }

    /// The secure channel, to answer requests.
    pub fn channel_mut(&mut self) -> Option<&mut SecureChannel> {
        match &mut self.phase {
            Phase::Channel(channel) => Some(channel),
            _ => None,
        }
    }

    /// The client's Hello, once received.
    pub fn hello_message(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// True once nothing more will be processed; the driver writes what is queued and closes the socket.
    pub fn is_closed(&self) -> bool {
        match &self.phase {
            Phase::Closed => true,
            Phase::Channel(channel) => channel.is_closed(),
            Phase::AwaitingHello { .. } => false,
        }
    }
}

/// The client's Hello/Acknowledge exchange.
#[derive(Debug)]
pub struct ClientHandshake {
    limits: Limits,
    hello: Hello,
    sent: bool,
}

impl ClientHandshake {
    /// Prepares the Hello for `endpoint_url` with our `limits`.
    pub fn new(limits: Limits, endpoint_url: &str) -> Result<Self> {
        let hello = limits.hello(endpoint_url)?;
        Ok(ClientHandshake { limits, hello, sent: false })
    }

    /// The Hello to write, once.
    pub fn poll_transmit(&mut self) -> Result<Option<Vec<u8>>> {
        if self.sent {
            return Ok(None);
        }
        self.sent = true;
        self.hello.encode().map(Some)
    }

    /// Handles the server's answer: an Acknowledge gives the limits; an Error message is [`Error::Remote`] with the
    /// server's status; anything else is `BadTcpMessageTypeInvalid`.
    pub fn handle_frame(&self, frame: &[u8]) -> Result<Negotiated> {
        match UacpMessage::decode(frame)? {
            UacpMessage::Acknowledge(ack) => self.limits.accept_acknowledge(&self.hello, &ack),
            UacpMessage::Error(err) => Err(Error::Remote { status: err.error, reason: err.reason }),
            other => Err(Error::MessageTypeInvalid(format!("{other:?} instead of Acknowledge"))),
        }
    }

    /// The limits we asked for.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opcua_types::StatusCode;

    use super::*;
    use crate::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
    use crate::channel::secure_channel::AcceptAnyCertificate;

    fn connection(now: Instant) -> ServerConnection {
        let config = ConnectionConfig::for_urls(["opc.tcp://127.0.0.1:4840/"]).unwrap();
        let channel = ServerConfig {
            identity: None,
            endpoints: vec![(SecurityPolicy::None, SecurityMode::None)],
            deprecated: DeprecatedPolicies::Reject,
            secure_channel_id: 7,
            min_lifetime_ms: 1_000,
            max_lifetime_ms: 60_000,
            validator: Arc::new(AcceptAnyCertificate),
        };
        ServerConnection::new(config, channel, now)
    }

    fn refused_with(input: &[u8], status: StatusCode) {
        let mut conn = connection(Instant::now());
        conn.receive(input);
        assert_eq!(conn.process_next(Now::system()).unwrap_err().status_code(), status);
        assert!(conn.is_closed());
        let err = ErrorMessage::decode(&conn.poll_transmit().expect("an Error message")).unwrap();
        assert_eq!(err.error, status);
        assert!(conn.poll_transmit().is_none());
    }

    #[test]
    fn hello_is_acknowledged_and_the_channel_follows() {
        let mut conn = connection(Instant::now());
        let hello = Limits::default().hello("opc.tcp://localhost:4840").unwrap().encode().unwrap();
        // Split across reads: nothing happens until the frame is whole.
        conn.receive(&hello[..5]);
        assert!(!conn.process_next(Now::system()).unwrap());
        conn.receive(&hello[5..]);
        assert!(conn.process_next(Now::system()).unwrap());
        let ack = conn.poll_transmit().unwrap();
        assert!(matches!(UacpMessage::decode(&ack).unwrap(), UacpMessage::Acknowledge(_)));
        assert!(conn.channel().is_some() && !conn.is_closed());
        assert_eq!(conn.hello_message().unwrap().endpoint_url, "opc.tcp://localhost:4840");
    }

    #[test]
    fn anything_but_a_valid_hello_first_is_refused_with_an_error_message() {
        refused_with(b"GARBAGE!GARBAGE!GARBAGE!GARBAGE!", StatusCode::BadTcpMessageTypeInvalid);
        refused_with(
            b"OPNF\x20\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            StatusCode::BadTcpMessageTypeInvalid,
        );
        refused_with(b"HELF\xff\xff\xff\x7f", StatusCode::BadTcpMessageTooLarge);
        let hello = Limits::default().hello("opc.tcp://localhost:4840/other").unwrap().encode().unwrap();
        refused_with(&hello, StatusCode::BadTcpEndpointUrlInvalid);
        let hello = Limits::default().hello("http://localhost:4840/").unwrap().encode().unwrap();
        refused_with(&hello, StatusCode::BadTcpEndpointUrlInvalid);
    }

    #[test]
    fn silent_connections_time_out() {
        let start = Instant::now();
        let mut conn = connection(start);
        let deadline = conn.poll_timeout().unwrap();
        assert_eq!(deadline, start + DEFAULT_HELLO_TIMEOUT);
        let early = Now::new(start + Duration::from_secs(1), opcua_types::DateTime::now());
        conn.handle_timeout(early).unwrap();
        assert!(!conn.is_closed());
        let late = Now::new(deadline, opcua_types::DateTime::now());
        assert_eq!(conn.handle_timeout(late).unwrap_err().status_code(), StatusCode::BadTimeout);
        assert!(conn.is_closed());
    }

    #[test]
    fn client_handshake_reports_acknowledge_and_error() {
        let mut client = ClientHandshake::new(Limits::default(), "opc.tcp://localhost:4840/").unwrap();
        let hello = Hello::decode(&client.poll_transmit().unwrap().unwrap()).unwrap();
        assert!(client.poll_transmit().unwrap().is_none());
        let (ack, _) = Limits::default().acknowledge(&hello).unwrap();
        assert!(client.handle_frame(&ack.encode()).is_ok());
        let err = ErrorMessage { error: StatusCode::BadTcpEndpointUrlInvalid, reason: "no".into() }.encode();
        assert_eq!(client.handle_frame(&err).unwrap_err().status_code(), StatusCode::BadTcpEndpointUrlInvalid);
        assert!(client.handle_frame(&hello.encode().unwrap()).is_err());
    }
}
