//! UACP messages (Part 6 §7.1.2): the 8-byte message header, Hello, Acknowledge, Error and ReverseHello, limits
//! negotiation, and a [`FrameDecoder`] that cuts a byte stream into whole messages without trusting the sizes it reads.

use opcua_types::StatusCode;

use crate::error::{Error, Result};
use crate::wire::{self, Reader};

/// The UACP protocol version of Part 6 (1.04 and 1.05).
pub const PROTOCOL_VERSION: u32 = 0;
/// Length of the UACP message header (MessageType, Reserved/IsFinal, MessageSize).
pub const HEADER_LEN: usize = 8;
/// Minimum ReceiveBufferSize/SendBufferSize when an RSA (or None) policy may be used.
pub const MIN_BUFFER_SIZE: u32 = 8192;
/// Minimum buffer size a peer may announce when it intends to use only ECC policies (1.05).
pub const MIN_BUFFER_SIZE_ECC: u32 = 1024;
/// Longest EndpointUrl and ServerUri, in bytes.
pub const MAX_URL_LEN: usize = 4096;
/// Longest Error reason, in bytes.
pub const MAX_REASON_LEN: usize = 4096;

/// The three-letter message types of UACP and UASC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `HEL`: client opens the connection.
    Hello,
    /// `ACK`: server accepts the Hello.
    Acknowledge,
    /// `ERR`: fatal error; the connection closes after it.
    Error,
    /// `RHE`: reverse connect, the server dials the client.
    ReverseHello,
    /// `OPN`: OpenSecureChannel (asymmetric security).
    OpenSecureChannel,
    /// `CLO`: CloseSecureChannel (symmetric security).
    CloseSecureChannel,
    /// `MSG`: any other service message (symmetric security).
    Message,
}

impl MessageType {
    /// The three ASCII bytes on the wire.
    pub fn code(self) -> [u8; 3] {
        *match self {
            MessageType::Hello => b"HEL",
            MessageType::Acknowledge => b"ACK",
            MessageType::Error => b"ERR",
            MessageType::ReverseHello => b"RHE",
            MessageType::OpenSecureChannel => b"OPN",
            MessageType::CloseSecureChannel => b"CLO",
            MessageType::Message => b"MSG",
        }
    }

    /// Parses the three ASCII bytes; anything else is `BadTcpMessageTypeInvalid`.
    pub fn from_code(code: [u8; 3]) -> Result<Self> {
        Ok(match &code {
            b"HEL" => MessageType::Hello,
            b"ACK" => MessageType::Acknowledge,
            b"ERR" => MessageType::Error,
            b"RHE" => MessageType::ReverseHello,
            b"OPN" => MessageType::OpenSecureChannel,
            b"CLO" => MessageType::CloseSecureChannel,
            b"MSG" => MessageType::Message,
            _ => return Err(Error::MessageTypeInvalid(String::from_utf8_lossy(&code).into_owned())),
        })
    }

    /// True for the secure-conversation types (OPN, CLO, MSG), whose header carries a SecureChannelId.
    pub fn is_secure(self) -> bool {
        matches!(self, MessageType::OpenSecureChannel | MessageType::CloseSecureChannel | MessageType::Message)
    }

    /// Smallest valid MessageSize for this type: the fixed part of its headers.
    pub fn min_size(self) -> u32 {
        match self {
            // Header + 5 UInt32 + a null EndpointUrl.
            MessageType::Hello => 8 + 20 + 4,
            MessageType::Acknowledge => 8 + 20,
            MessageType::Error => 8 + 4 + 4,
            MessageType::ReverseHello => 8 + 4 + 4,
            // Header + SecureChannelId + three null strings + sequence header.
            MessageType::OpenSecureChannel => 12 + 12 + 8,
            // Header + SecureChannelId + TokenId + sequence header.
            MessageType::CloseSecureChannel | MessageType::Message => 12 + 4 + 8,
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.code()))
    }
}

/// The fourth header byte of secure-conversation messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChunkType {
    /// `F`: the final (or only) chunk of a message.
    Final,
    /// `C`: an intermediate chunk; more follow.
    Intermediate,
    /// `A`: the sender aborts the message; the body is an error code and reason.
    Abort,
}

impl ChunkType {
    /// The ASCII byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            ChunkType::Final => b'F',
            ChunkType::Intermediate => b'C',
            ChunkType::Abort => b'A',
        }
    }

    /// Parses the byte; anything else is `BadTcpMessageTypeInvalid`.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            b'F' => Ok(ChunkType::Final),
            b'C' => Ok(ChunkType::Intermediate),
            b'A' => Ok(ChunkType::Abort),
            other => Err(Error::MessageTypeInvalid(format!("chunk type {other:#04x}"))),
        }
    }
}

/// The 8-byte header every UACP and UASC message starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// What the message is.
    pub message_type: MessageType,
    /// Final/intermediate/abort. UACP messages ignore the byte (Part 6 says "ignored"), and report `Final`.
    pub chunk_type: ChunkType,
    /// Length of the whole message, header included.
    pub message_size: u32,
}

impl MessageHeader {
    /// Parses the first 8 bytes of `buf`, checking the type and that the size covers the type's fixed headers.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let message_type = MessageType::from_code(r.array("message type")?)?;
        let raw_chunk = r.u8("chunk type")?;
        let chunk_type = if message_type.is_secure() { ChunkType::from_code(raw_chunk)? } else { ChunkType::Final };
        let message_size = r.u32("message size")?;
        if message_size < message_type.min_size() {
            return Err(Error::Decoding(format!(
                "{message_type} message size {message_size} is smaller than its headers ({})",
                message_type.min_size()
            )));
        }
        Ok(MessageHeader { message_type, chunk_type, message_size })
    }

    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.message_type.code());
        out.push(self.chunk_type.code());
        wire::put_u32(out, self.message_size);
    }
}

/// Writes a UACP message: header with the final size, then `body`.
fn frame(message_type: MessageType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    let size = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    MessageHeader { message_type, chunk_type: ChunkType::Final, message_size: size }.encode(&mut out);
    out.extend_from_slice(body);
    out
}

/// Checks a whole received message's header against the expected type and its length, and returns a reader
/// positioned after the header.
fn unframe(expected: MessageType, message: &[u8]) -> Result<Reader<'_>> {
    let header = MessageHeader::decode(message)?;
    if header.message_type != expected {
        return Err(Error::MessageTypeInvalid(format!("expected {expected}, got {}", header.message_type)));
    }
    if header.message_size as usize != message.len() {
        return Err(Error::Decoding(format!(
            "{expected} says {} bytes but {} arrived",
            header.message_size,
            message.len()
        )));
    }
    let mut r = Reader::new(message);
    r.bytes(HEADER_LEN, "header")?;
    Ok(r)
}

fn finish(r: &Reader<'_>, what: MessageType) -> Result<()> {
    if r.remaining() != 0 {
        return Err(Error::Decoding(format!("{} trailing bytes after {what}", r.remaining())));
    }
    Ok(())
}

/// The client's Hello (Part 6 §7.1.2.3). Sizes are what the *client* can receive/send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Requested protocol version.
    pub protocol_version: u32,
    /// Largest chunk the client can receive.
    pub receive_buffer_size: u32,
    /// Largest chunk the client will send.
    pub send_buffer_size: u32,
    /// Largest response body the client accepts; 0 = no limit.
    pub max_message_size: u32,
    /// Most chunks per response the client accepts; 0 = no limit.
    pub max_chunk_count: u32,
    /// The endpoint the client wants.
    pub endpoint_url: String,
}

impl Hello {
    /// Encodes the whole message, header included. The URL is checked so we never send what a peer must reject.
    pub fn encode(&self) -> Result<Vec<u8>> {
        check_url(&self.endpoint_url, "EndpointUrl")?;
        let mut body = Vec::with_capacity(24 + self.endpoint_url.len());
        for v in [
            self.protocol_version,
            self.receive_buffer_size,
            self.send_buffer_size,
            self.max_message_size,
            self.max_chunk_count,
        ] {
            wire::put_u32(&mut body, v);
        }
        wire::put_byte_string(&mut body, Some(self.endpoint_url.as_bytes()));
        Ok(frame(MessageType::Hello, &body))
    }

    /// Decodes a whole Hello message.
    pub fn decode(message: &[u8]) -> Result<Self> {
        let mut r = unframe(MessageType::Hello, message)?;
        let protocol_version = r.u32("ProtocolVersion")?;
        let receive_buffer_size = r.u32("ReceiveBufferSize")?;
        let send_buffer_size = r.u32("SendBufferSize")?;
        let max_message_size = r.u32("MaxMessageSize")?;
        let max_chunk_count = r.u32("MaxChunkCount")?;
        let endpoint_url = match r.string(MAX_URL_LEN, "EndpointUrl") {
            Ok(url) => url.unwrap_or_default().to_owned(),
            Err(Error::EncodingLimitsExceeded(m)) => return Err(Error::EndpointUrlInvalid(m)),
            Err(Error::Decoding(m)) if m.contains("UTF-8") => return Err(Error::EndpointUrlInvalid(m)),
            Err(e) => return Err(e),
        };
        finish(&r, MessageType::Hello)?;
        Ok(Hello {
            protocol_version,
            receive_buffer_size,
            send_buffer_size,
            max_message_size,
            max_chunk_count,
            endpoint_url,
        })
    }
}

/// The server's Acknowledge (Part 6 §7.1.2.4). Sizes are what the *server* can receive/send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acknowledge {
    /// The protocol version the server will use (≤ the client's).
    pub protocol_version: u32,
    /// Largest chunk the server can receive (≤ the client's SendBufferSize).
    pub receive_buffer_size: u32,
    /// Largest chunk the server will send (≤ the client's ReceiveBufferSize).
    pub send_buffer_size: u32,
    /// Largest request body the server accepts; 0 = no limit.
    pub max_message_size: u32,
    /// Most chunks per request the server accepts; 0 = no limit.
    pub max_chunk_count: u32,
}

impl Acknowledge {
    /// Encodes the whole message, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(20);
        for v in [
            self.protocol_version,
            self.receive_buffer_size,
            self.send_buffer_size,
            self.max_message_size,
            self.max_chunk_count,
        ] {
            wire::put_u32(&mut body, v);
        }
        frame(MessageType::Acknowledge, &body)
    }

    /// Decodes a whole Acknowledge message.
    pub fn decode(message: &[u8]) -> Result<Self> {
        let mut r = unframe(MessageType::Acknowledge, message)?;
        let ack = Acknowledge {
            protocol_version: r.u32("ProtocolVersion")?,
            receive_buffer_size: r.u32("ReceiveBufferSize")?,
            send_buffer_size: r.u32("SendBufferSize")?,
            max_message_size: r.u32("MaxMessageSize")?,
            max_chunk_count: r.u32("MaxChunkCount")?,
        };
        finish(&r, MessageType::Acknowledge)?;
        Ok(ack)
    }
}

/// An Error message (Part 6 §7.1.2.5); the sender closes the connection after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMessage {
    /// The status code.
    pub error: StatusCode,
    /// Human-readable reason; never security detail.
    pub reason: String,
}

impl ErrorMessage {
    /// The Error message that reports `err` to the peer: its status code, and a reason only when it is not a
    /// security failure (Part 6 forbids hinting which security check failed).
    pub fn from_error(err: &Error) -> Self {
        let error = err.status_code();
        let reason = if error == StatusCode::BadSecurityChecksFailed { String::new() } else { err.to_string() };
        ErrorMessage { error, reason }
    }

    /// Encodes the whole message; a reason longer than 4096 bytes is truncated.
    pub fn encode(&self) -> Vec<u8> {
        let reason = wire::truncate_utf8(&self.reason, MAX_REASON_LEN);
        let mut body = Vec::with_capacity(8 + reason.len());
        wire::put_u32(&mut body, self.error.bits());
        wire::put_byte_string(&mut body, Some(reason.as_bytes()));
        frame(MessageType::Error, &body)
    }

    /// Decodes a whole Error message. A reason over 4096 bytes is dropped, as Part 6 tells clients to ignore it.
    pub fn decode(message: &[u8]) -> Result<Self> {
        let mut r = unframe(MessageType::Error, message)?;
        let error = StatusCode::from(r.u32("Error")?);
        let reason = match r.string(MAX_REASON_LEN, "Reason") {
            Ok(s) => s.unwrap_or_default().to_owned(),
            Err(Error::EncodingLimitsExceeded(_)) => {
                let _ = r.bytes(r.remaining(), "Reason");
                String::new()
            }
            Err(e) => return Err(e),
        };
        finish(&r, MessageType::Error)?;
        Ok(ErrorMessage { error, reason })
    }
}

/// A ReverseHello (Part 6 §7.1.2.6): the server connected to the client and names itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseHello {
    /// ApplicationUri of the server.
    pub server_uri: String,
    /// The endpoint the client should ask for in its Hello.
    pub endpoint_url: String,
}

impl ReverseHello {
    /// Encodes the whole message, header included.
    pub fn encode(&self) -> Result<Vec<u8>> {
        check_url(&self.server_uri, "ServerUri")?;
        check_url(&self.endpoint_url, "EndpointUrl")?;
        let mut body = Vec::with_capacity(8 + self.server_uri.len() + self.endpoint_url.len());
        wire::put_byte_string(&mut body, Some(self.server_uri.as_bytes()));
        wire::put_byte_string(&mut body, Some(self.endpoint_url.as_bytes()));
        Ok(frame(MessageType::ReverseHello, &body))
    }

    /// Decodes a whole ReverseHello message.
    pub fn decode(message: &[u8]) -> Result<Self> {
        let mut r = unframe(MessageType::ReverseHello, message)?;
        let server_uri = r.string(MAX_URL_LEN, "ServerUri")?.unwrap_or_default().to_owned();
        let endpoint_url = match r.string(MAX_URL_LEN, "EndpointUrl") {
            Ok(url) => url.unwrap_or_default().to_owned(),
            Err(Error::EncodingLimitsExceeded(m)) => return Err(Error::EndpointUrlInvalid(m)),
            Err(e) => return Err(e),
        };
        finish(&r, MessageType::ReverseHello)?;
        Ok(ReverseHello { server_uri, endpoint_url })
    }
}

fn check_url(url: &str, what: &str) -> Result<()> {
    if url.len() > MAX_URL_LEN {
        return Err(Error::EndpointUrlInvalid(format!("{what} of {} bytes exceeds {MAX_URL_LEN}", url.len())));
    }
    Ok(())
}

/// A UACP message decoded by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UacpMessage {
    /// HEL.
    Hello(Hello),
    /// ACK.
    Acknowledge(Acknowledge),
    /// ERR.
    Error(ErrorMessage),
    /// RHE.
    ReverseHello(ReverseHello),
}

impl UacpMessage {
    /// Decodes a whole UACP message; secure-conversation types are `BadTcpMessageTypeInvalid` here.
    pub fn decode(message: &[u8]) -> Result<Self> {
        let header = MessageHeader::decode(message)?;
        Ok(match header.message_type {
            MessageType::Hello => UacpMessage::Hello(Hello::decode(message)?),
            MessageType::Acknowledge => UacpMessage::Acknowledge(Acknowledge::decode(message)?),
            MessageType::Error => UacpMessage::Error(ErrorMessage::decode(message)?),
            MessageType::ReverseHello => UacpMessage::ReverseHello(ReverseHello::decode(message)?),
            other => return Err(Error::MessageTypeInvalid(format!("{other} is not a UACP message"))),
        })
    }
}

/// Our side's transport limits: configuration with safe defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk we can receive.
    pub receive_buffer_size: u32,
    /// Largest chunk we will send.
    pub send_buffer_size: u32,
    /// Largest message body we accept; 0 = no limit (not recommended).
    pub max_message_size: u32,
    /// Most chunks per message we accept; 0 = no limit (not recommended).
    pub max_chunk_count: u32,
    /// Smallest buffer size we accept from a peer: [`MIN_BUFFER_SIZE`] unless only ECC policies are offered.
    pub min_buffer_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            receive_buffer_size: 65_535,
            send_buffer_size: 65_535,
            max_message_size: 16 * 1024 * 1024,
            max_chunk_count: 4096,
            min_buffer_size: MIN_BUFFER_SIZE,
        }
    }
}

/// What both sides agreed on; 0 in a message size or chunk count means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Largest chunk we may receive (frames over this are `BadTcpMessageTooLarge`).
    pub receive_buffer_size: u32,
    /// Largest chunk we may send.
    pub send_buffer_size: u32,
    /// Largest message body we accept.
    pub max_receive_message_size: u32,
    /// Most chunks per message we accept.
    pub max_receive_chunk_count: u32,
    /// Largest message body the peer accepts.
    pub max_send_message_size: u32,
    /// Most chunks per message the peer accepts.
    pub max_send_chunk_count: u32,
}

impl Limits {
    fn check_own(&self) -> Result<()> {
        for size in [self.receive_buffer_size, self.send_buffer_size] {
            if size < self.min_buffer_size {
                return Err(Error::BufferTooSmall { size, min: self.min_buffer_size });
            }
        }
        Ok(())
    }

    fn check_peer(&self, sizes: [u32; 2]) -> Result<()> {
        for size in sizes {
            if size < self.min_buffer_size {
                return Err(Error::BufferTooSmall { size, min: self.min_buffer_size });
            }
        }
        Ok(())
    }

    /// The Hello a client sends with these limits.
    pub fn hello(&self, endpoint_url: &str) -> Result<Hello> {
        self.check_own()?;
        check_url(endpoint_url, "EndpointUrl")?;
        Ok(Hello {
            protocol_version: PROTOCOL_VERSION,
            receive_buffer_size: self.receive_buffer_size,
            send_buffer_size: self.send_buffer_size,
            max_message_size: self.max_message_size,
            max_chunk_count: self.max_chunk_count,
            endpoint_url: endpoint_url.to_owned(),
        })
    }

    /// Server side: answers a Hello. Buffers shrink to what both sides can do; the peer's buffers must reach the
    /// minimum (8192 bytes for RSA policies).
    pub fn acknowledge(&self, hello: &Hello) -> Result<(Acknowledge, Negotiated)> {
        self.check_own()?;
        self.check_peer([hello.receive_buffer_size, hello.send_buffer_size])?;
        // Version 0 is the lowest there is, so any requested version can be answered with it.
        let ack = Acknowledge {
            protocol_version: PROTOCOL_VERSION,
            receive_buffer_size: self.receive_buffer_size.min(hello.send_buffer_size),
            send_buffer_size: self.send_buffer_size.min(hello.receive_buffer_size),
            max_message_size: self.max_message_size,
            max_chunk_count: self.max_chunk_count,
        };
        let negotiated = Negotiated {
            receive_buffer_size: ack.receive_buffer_size,
            send_buffer_size: ack.send_buffer_size,
            max_receive_message_size: self.max_message_size,
            max_receive_chunk_count: self.max_chunk_count,
            max_send_message_size: hello.max_message_size,
            max_send_chunk_count: hello.max_chunk_count,
        };
        Ok((ack, negotiated))
    }

    /// Client side: checks the server's Acknowledge against the Hello we sent.
    pub fn accept_acknowledge(&self, hello: &Hello, ack: &Acknowledge) -> Result<Negotiated> {
        if ack.protocol_version > hello.protocol_version {
            return Err(Error::ProtocolVersionUnsupported(ack.protocol_version));
        }
        self.check_peer([ack.receive_buffer_size, ack.send_buffer_size])?;
        if ack.receive_buffer_size > hello.send_buffer_size || ack.send_buffer_size > hello.receive_buffer_size {
            return Err(Error::Decoding(format!(
                "Acknowledge buffers {}/{} exceed the Hello's {}/{}",
                ack.receive_buffer_size, ack.send_buffer_size, hello.send_buffer_size, hello.receive_buffer_size
            )));
        }
        Ok(Negotiated {
            receive_buffer_size: ack.send_buffer_size,
            send_buffer_size: ack.receive_buffer_size,
            max_receive_message_size: hello.max_message_size,
            max_receive_chunk_count: hello.max_chunk_count,
            max_send_message_size: ack.max_message_size,
            max_send_chunk_count: ack.max_chunk_count,
        })
    }
}

/// Cuts a received byte stream into whole messages.
///
/// The header is checked as soon as its 8 bytes are in, so a peer announcing a huge MessageSize is refused before
/// anything is buffered for it.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame: u32,
}

/// One whole message off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its parsed header.
    pub header: MessageHeader,
    /// All of its bytes, header included.
    pub bytes: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder refusing messages over `max_frame` bytes (our ReceiveBufferSize).
    pub fn new(max_frame: u32) -> Self {
        FrameDecoder { buf: Vec::new(), max_frame }
    }

    /// Changes the limit, e.g. after negotiation shrank the receive buffer.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not yet form a whole message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `None` if more bytes are needed. After an error the stream cannot be resynchronised:
    /// the caller sends an Error message and closes.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(head) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header = MessageHeader::decode(head)?;
        if header.message_size > self.max_frame {
            return Err(Error::MessageTooLarge {
                what: "message chunk",
                size: header.message_size.into(),
                limit: self.max_frame.into(),
            });
        }
        let size = header.message_size as usize;
        if self.buf.len() < size {
            return Ok(None);
        }
        let rest = self.buf.split_off(size);
        let bytes = std::mem::replace(&mut self.buf, rest);
        Ok(Some(Frame { header, bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Limits::default().hello("opc.tcp://localhost:4840/").unwrap()
    }

    #[test]
    fn hello_round_trips() {
        let h = hello();
        let bytes = h.encode().unwrap();
        assert_eq!(&bytes[..4], b"HELF");
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(Hello::decode(&bytes).unwrap(), h);
        assert_eq!(UacpMessage::decode(&bytes).unwrap(), UacpMessage::Hello(h));
    }

    #[test]
    fn acknowledge_error_and_reverse_hello_round_trip() {
        let ack = Acknowledge {
            protocol_version: 0,
            receive_buffer_size: 8192,
            send_buffer_size: 65535,
            max_message_size: 0,
            max_chunk_count: 0,
        };
        assert_eq!(Acknowledge::decode(&ack.encode()).unwrap(), ack);
        let err = ErrorMessage { error: StatusCode::BadTcpMessageTooLarge, reason: "too big".into() };
        assert_eq!(ErrorMessage::decode(&err.encode()).unwrap(), err);
        let rhe = ReverseHello { server_uri: "urn:a".into(), endpoint_url: "opc.tcp://a:4840".into() };
        let bytes = rhe.encode().unwrap();
        assert_eq!(ReverseHello::decode(&bytes).unwrap(), rhe);
        assert_eq!(UacpMessage::decode(&bytes).unwrap(), UacpMessage::ReverseHello(rhe));
    }

    #[test]
    fn error_reason_is_truncated_on_send_and_dropped_when_too_long_on_receive() {
        let err = ErrorMessage { error: StatusCode::BadTimeout, reason: "x".repeat(5000) };
        let back = ErrorMessage::decode(&err.encode()).unwrap();
        assert_eq!(back.reason.len(), MAX_REASON_LEN);
        // Hand-made: a 5000-byte reason from a peer.
        let mut body = Vec::new();
        wire::put_u32(&mut body, StatusCode::BadTimeout.bits());
        wire::put_byte_string(&mut body, Some(&[b'y'; 5000]));
        let back = ErrorMessage::decode(&frame(MessageType::Error, &body)).unwrap();
        assert_eq!(back.error, StatusCode::BadTimeout);
        assert!(back.reason.is_empty());
    }

    #[test]
    fn security_failures_carry_no_reason() {
        let m = ErrorMessage::from_error(&Error::SecurityChecksFailed("bad MAC"));
        assert_eq!(m.error, StatusCode::BadSecurityChecksFailed);
        assert!(m.reason.is_empty());
    }

    #[test]
    fn endpoint_url_over_4096_bytes_is_rejected() {
        let long = format!("opc.tcp://{}", "a".repeat(MAX_URL_LEN));
        let e = Limits::default().hello(&long).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadTcpEndpointUrlInvalid);
        let mut body = Vec::new();
        for _ in 0..5 {
            wire::put_u32(&mut body, 8192);
        }
        wire::put_byte_string(&mut body, Some(long.as_bytes()));
        let e = Hello::decode(&frame(MessageType::Hello, &body)).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadTcpEndpointUrlInvalid);
    }

    #[test]
    fn wrong_types_truncation_and_trailing_bytes_are_rejected() {
        let bytes = hello().encode().unwrap();
        assert_eq!(Acknowledge::decode(&bytes).unwrap_err().status_code(), StatusCode::BadTcpMessageTypeInvalid);
        let mut unknown = bytes.clone();
        unknown[..3].copy_from_slice(b"XYZ");
        assert_eq!(Hello::decode(&unknown).unwrap_err().status_code(), StatusCode::BadTcpMessageTypeInvalid);
        // Truncated: the header claims more than arrived.
        assert_eq!(Hello::decode(&bytes[..bytes.len() - 1]).unwrap_err().status_code(), StatusCode::BadDecodingError);
        // Trailing bytes counted in MessageSize.
        let mut long = bytes.clone();
        long.push(0);
        let n = long.len() as u32;
        wire::patch_u32(&mut long, 4, n);
        assert_eq!(Hello::decode(&long).unwrap_err().status_code(), StatusCode::BadDecodingError);
        // A header shorter than 8 bytes, and a size smaller than the type's fixed fields.
        assert_eq!(MessageHeader::decode(b"HELF").unwrap_err().status_code(), StatusCode::BadDecodingError);
        assert_eq!(MessageHeader::decode(b"HELF\x08\0\0\0").unwrap_err().status_code(), StatusCode::BadDecodingError);
        // MSG/OPN/CLO need F, C or A.
        assert_eq!(
            MessageHeader::decode(b"MSGX\x40\0\0\0").unwrap_err().status_code(),
            StatusCode::BadTcpMessageTypeInvalid
        );
        let ack = Acknowledge {
            protocol_version: 0,
            receive_buffer_size: 8192,
            send_buffer_size: 8192,
            max_message_size: 0,
            max_chunk_count: 0,
        };
        assert!(matches!(UacpMessage::decode(&ack.encode()), Ok(UacpMessage::Acknowledge(_))));
        assert_eq!(
            UacpMessage::decode(b"MSGF\x18\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").unwrap_err().status_code(),
            StatusCode::BadTcpMessageTypeInvalid
        );
    }

    #[test]
    fn negotiation_shrinks_buffers_and_keeps_zero_as_no_limit() {
        let server = Limits { receive_buffer_size: 16384, send_buffer_size: 16384, ..Limits::default() };
        let mut h = hello();
        h.receive_buffer_size = 9000;
        h.send_buffer_size = 65535;
        h.max_message_size = 0;
        h.max_chunk_count = 0;
        let (ack, sn) = server.acknowledge(&h).unwrap();
        assert_eq!(ack.receive_buffer_size, 16384);
        assert_eq!(ack.send_buffer_size, 9000);
        assert_eq!(sn.max_send_message_size, 0, "0 stays 'no limit'");
        assert_eq!(sn.max_send_chunk_count, 0);
        let cn = Limits::default().accept_acknowledge(&h, &ack).unwrap();
        assert_eq!(cn.send_buffer_size, sn.receive_buffer_size);
        assert_eq!(cn.receive_buffer_size, sn.send_buffer_size);
        assert_eq!(cn.max_send_message_size, server.max_message_size);
    }

    #[test]
    fn buffers_below_8192_are_rejected_for_rsa_and_1024_allowed_for_ecc() {
        let mut h = hello();
        h.receive_buffer_size = 8191;
        let e = Limits::default().acknowledge(&h).unwrap_err();
        assert!(matches!(e, Error::BufferTooSmall { size: 8191, min: 8192 }));
        let ecc = Limits { min_buffer_size: MIN_BUFFER_SIZE_ECC, ..Limits::default() };
        h.receive_buffer_size = 1024;
        assert!(ecc.acknowledge(&h).is_ok());
        let small = Limits { receive_buffer_size: 4096, ..Limits::default() };
        assert!(small.hello("opc.tcp://x").is_err());
    }

    #[test]
    fn client_rejects_acknowledge_that_exceeds_its_hello() {
        let h = hello();
        let (mut ack, _) = Limits::default().acknowledge(&h).unwrap();
        ack.send_buffer_size = h.receive_buffer_size + 1;
        assert!(Limits::default().accept_acknowledge(&h, &ack).is_err());
        let (mut ack, _) = Limits::default().acknowledge(&h).unwrap();
        ack.protocol_version = 1;
        assert_eq!(
            Limits::default().accept_acknowledge(&h, &ack).unwrap_err().status_code(),
            StatusCode::BadProtocolVersionUnsupported
        );
    }

    #[test]
    fn frame_decoder_splits_stream_and_refuses_oversized_frames_early() {
        let a = hello().encode().unwrap();
        let b = ErrorMessage { error: StatusCode::BadTimeout, reason: String::new() }.encode();
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        let mut dec = FrameDecoder::new(8192);
        // Byte by byte: frames appear exactly when complete.
        let mut frames = Vec::new();
        for byte in &stream {
            dec.push(std::slice::from_ref(byte));
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f.bytes);
            }
        }
        assert_eq!(frames, vec![a, b]);
        assert_eq!(dec.buffered(), 0);

        let mut dec = FrameDecoder::new(8192);
        dec.push(b"MSGF\x01\x20\0\0");
        let e = dec.next_frame().unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadTcpMessageTooLarge);
        let mut dec = FrameDecoder::new(8192);
        dec.push(b"FOOF\x20\0\0\0");
        assert_eq!(dec.next_frame().unwrap_err().status_code(), StatusCode::BadTcpMessageTypeInvalid);
        let mut dec = FrameDecoder::new(8192);
        dec.push(b"MSGF\xff\xff\xff\xff");
        assert_eq!(dec.next_frame().unwrap_err().status_code(), StatusCode::BadTcpMessageTooLarge);
    }
}
