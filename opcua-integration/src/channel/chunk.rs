//! Secure-conversation chunks (Part 6 §6.7.2): the 12-byte chunk header, the sequence header, the size arithmetic
//! of a secured chunk (padding, signature, encryption blocks), splitting a message into chunks within the peer's
//! limits, and reassembling received chunks within ours.

use opcua_types::StatusCode;

use super::Role;
use crate::error::{Error, Result};
use crate::transport::uacp::{ChunkType, MessageHeader, MessageType, MAX_REASON_LEN};
use crate::wire::{self, Reader};

/// MessageHeader (8) + SecureChannelId (4).
pub const CHUNK_HEADER_LEN: usize = 12;
/// SequenceNumber (4) + RequestId (4).
pub const SEQUENCE_HEADER_LEN: usize = 8;

/// The header of an OPN, MSG or CLO chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// OPN, MSG or CLO.
    pub message_type: MessageType,
    /// Final, intermediate or abort.
    pub chunk_type: ChunkType,
    /// Size of the whole chunk as sent (encrypted size).
    pub message_size: u32,
    /// The channel, chosen by the server; 0 in the first OpenSecureChannel request.
    pub secure_channel_id: u32,
}

impl ChunkHeader {
    /// Parses the header of a whole chunk, checking the type, that MessageSize is the chunk's length, and that
    /// OPN and CLO are single final chunks.
    pub fn decode(chunk: &[u8]) -> Result<Self> {
        let header = MessageHeader::decode(chunk)?;
        if !header.message_type.is_secure() {
            return Err(Error::MessageTypeInvalid(format!(
                "{} is not a secure-conversation chunk",
                header.message_type
            )));
        }
        if header.message_size as usize != chunk.len() {
            return Err(Error::Decoding(format!(
                "chunk says {} bytes but {} arrived",
                header.message_size,
                chunk.len()
            )));
        }
        if header.message_type != MessageType::Message && header.chunk_type != ChunkType::Final {
            // OPN and CLO are always one final chunk; anything else is a confused or hostile peer.
            return Err(Error::MessageTypeInvalid(format!(
                "{} chunks must be final, got {:?}",
                header.message_type, header.chunk_type
            )));
        }
        let mut r = Reader::new(chunk);
        r.bytes(8, "message header")?;
        let secure_channel_id = r.u32("SecureChannelId")?;
        Ok(ChunkHeader {
            message_type: header.message_type,
            chunk_type: header.chunk_type,
            message_size: header.message_size,
            secure_channel_id,
        })
    }

    /// Appends the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        MessageHeader { message_type: self.message_type, chunk_type: self.chunk_type, message_size: self.message_size }
            .encode(out);
        wire::put_u32(out, self.secure_channel_id);
    }
}

/// SequenceNumber and RequestId, the first (encrypted) fields after the security header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceHeader {
    /// Per-channel, per-direction chunk counter.
    pub sequence_number: u32,
    /// The client's request id; the response carries the same.
    pub request_id: u32,
}

impl SequenceHeader {
    /// Parses 8 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::read(&mut Reader::new(bytes))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SequenceHeader { sequence_number: r.u32("SequenceNumber")?, request_id: r.u32("RequestId")? })
    }

    /// Appends 8 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        wire::put_u32(out, self.sequence_number);
        wire::put_u32(out, self.request_id);
    }
}

/// Block sizes of an encrypted chunk region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Plaintext bytes per block (16 for AES; modulus minus padding overhead for RSA).
    pub plain: usize,
    /// Ciphertext bytes per block (16 for AES; the modulus length for RSA).
    pub cipher: usize,
}

/// The size arithmetic of one secured chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLayout {
    /// Length of the security header (4 for symmetric; variable for asymmetric).
    pub security_header_len: usize,
    /// Signature (or MAC) length; 0 without signing.
    pub signature_len: usize,
    /// Block sizes when the chunk is encrypted.
    pub encryption: Option<Blocks>,
    /// Whether the padding carries ExtraPaddingSize (the encrypting key is longer than 2048 bits).
    pub extra_padding: bool,
}

impl ChunkLayout {
    fn overhead(&self) -> usize {
        CHUNK_HEADER_LEN + self.security_header_len
    }

    fn size_bytes(&self) -> usize {
        1 + usize::from(self.extra_padding)
    }

    /// Bytes of padding fields (PaddingSize, padding, ExtraPaddingSize) after a body of `body_len`; 0 unencrypted.
    pub fn padding_len(&self, body_len: usize) -> usize {
        let Some(blocks) = self.encryption else { return 0 };
        let unpadded = SEQUENCE_HEADER_LEN + body_len + self.signature_len + self.size_bytes();
        let fill = (blocks.plain - unpadded % blocks.plain) % blocks.plain;
        self.size_bytes() + fill
    }

    /// The plaintext from the sequence header to the end of the signature.
    pub fn plaintext_len(&self, body_len: usize) -> usize {
        SEQUENCE_HEADER_LEN + body_len + self.padding_len(body_len) + self.signature_len
    }

    /// The whole chunk on the wire.
    pub fn chunk_len(&self, body_len: usize) -> usize {
        let plain = self.plaintext_len(body_len);
        let secured = match self.encryption {
            Some(b) => plain / b.plain * b.cipher,
            None => plain,
        };
        self.overhead() + secured
    }

    /// The largest body that fits a chunk of `chunk_size` bytes.
    pub fn max_body_len(&self, chunk_size: usize) -> Result<usize> {
        let room = chunk_size.saturating_sub(self.overhead());
        let plain = match self.encryption {
            Some(b) => room / b.cipher * b.plain,
            None => room,
        };
        let fixed =
            SEQUENCE_HEADER_LEN + self.signature_len + if self.encryption.is_some() { self.size_bytes() } else { 0 };
        match plain.checked_sub(fixed) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(Error::EncodingLimitsExceeded(format!(
                "a chunk of {chunk_size} bytes has no room for a body after {} bytes of headers and security",
                self.overhead() + fixed
            ))),
        }
    }

    /// Appends the padding fields for a body of `body_len`: every padding byte holds the low byte of the padding
    /// count, and ExtraPaddingSize (if present) its high byte.
    pub fn write_padding(&self, out: &mut Vec<u8>, body_len: usize) {
        let total = self.padding_len(body_len);
        if total == 0 {
            return;
        }
        let count = total - self.size_bytes();
        let [low, high, ..] = (count as u32).to_le_bytes();
        out.extend(std::iter::repeat_n(low, count + 1));
        if self.extra_padding {
            out.push(high);
        }
    }

    /// Given decrypted `plain` (sequence header .. end of padding, signature already removed), checks the padding
    /// and returns where it starts, i.e. the end of the body. Every failure is `BadSecurityChecksFailed`.
    pub fn check_padding(&self, plain: &[u8]) -> Result<usize> {
        let bad = || Error::SecurityChecksFailed("padding");
        let end = plain.len();
        let (count, low) = if self.extra_padding {
            let high = *plain.get(end.wrapping_sub(1)).ok_or_else(bad)?;
            // The byte before ExtraPaddingSize is a padding byte, or PaddingSize itself: either way the low byte.
            let low = *plain.get(end.wrapping_sub(2)).ok_or_else(bad)?;
            ((usize::from(high) << 8) | usize::from(low), low)
        } else {
            let low = *plain.get(end.wrapping_sub(1)).ok_or_else(bad)?;
            (usize::from(low), low)
        };
        let total = count + self.size_bytes();
        let start = end.checked_sub(total).ok_or_else(bad)?;
        if start < SEQUENCE_HEADER_LEN {
            return Err(bad());
        }
        let fill = plain.get(start..start + count + 1).ok_or_else(bad)?;
        // Not constant-time: the MAC or signature over these bytes was verified before we look at them.
        if fill.iter().any(|&b| b != low) {
            return Err(bad());
        }
        Ok(start)
    }
}

/// Splits `body` into chunk bodies of at most `max_body_len`, refusing what the peer would not accept:
/// its MaxMessageSize (body bytes) and MaxChunkCount, 0 meaning no limit. An empty body still makes one chunk.
pub fn split_body(
    body: &[u8],
    max_body_len: usize,
    max_message_size: u32,
    max_chunk_count: u32,
    role: Role,
) -> Result<Vec<&[u8]>> {
    let too_large = |size: u64, limit: u64| match role {
        Role::Client => Error::RequestTooLarge { size, limit },
        Role::Server => Error::ResponseTooLarge { size, limit },
    };
    if max_body_len == 0 {
        return Err(Error::EncodingLimitsExceeded("chunks have no room for a body".into()));
    }
    if max_message_size != 0 && body.len() as u64 > u64::from(max_message_size) {
        return Err(too_large(body.len() as u64, max_message_size.into()));
    }
    let count = body.len().div_ceil(max_body_len).max(1);
    if max_chunk_count != 0 && count as u64 > u64::from(max_chunk_count) {
        return Err(too_large(count as u64, max_chunk_count.into()));
    }
    if body.is_empty() {
        return Ok(vec![body]);
    }
    Ok(body.chunks(max_body_len).collect())
}

/// The body of an abort chunk (Part 6 §6.7.3): Error and Reason.
pub fn encode_abort_body(status: StatusCode, reason: &str) -> Vec<u8> {
    let reason = wire::truncate_utf8(reason, MAX_REASON_LEN);
    let mut out = Vec::with_capacity(8 + reason.len());
    wire::put_u32(&mut out, status.bits());
    wire::put_byte_string(&mut out, Some(reason.as_bytes()));
    out
}

/// Parses an abort chunk body; an over-long reason is dropped, as Part 6 tells receivers to ignore it.
pub fn decode_abort_body(body: &[u8]) -> Result<(StatusCode, String)> {
    let mut r = Reader::new(body);
    let status = StatusCode::from(r.u32("abort Error")?);
    let reason = match r.string(MAX_REASON_LEN, "abort Reason") {
        Ok(s) => s.unwrap_or_default().to_owned(),
        Err(Error::EncodingLimitsExceeded(_)) => String::new(),
        Err(e) => return Err(e),
    };
    Ok((status, reason))
}

/// What reassembly produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assembled {
    /// A whole message body.
    Complete {
        /// OPN, MSG or CLO.
        message_type: MessageType,
        /// The request it belongs to.
        request_id: u32,
        /// The reassembled body.
        body: Vec<u8>,
    },
    /// The sender aborted the message; the channel stays open.
    Aborted {
        /// The request the aborted message belonged to.
        request_id: u32,
        /// The sender's status code.
        status: StatusCode,
        /// The sender's reason.
        reason: String,
    },
}

#[derive(Debug)]
struct Partial {
    message_type: MessageType,
    request_id: u32,
    body: Vec<u8>,
    chunks: u32,
}

/// Collects chunk bodies into messages within our MaxMessageSize and MaxChunkCount (0 = no limit). Chunks of one
/// message arrive back to back (Part 6 §6.7.3 has senders send them sequentially), so one message is pending at most.
#[derive(Debug)]
pub struct Reassembler {
    max_message_size: u32,
    max_chunk_count: u32,
    pending: Option<Partial>,
}

impl Reassembler {
    /// A reassembler with our receive limits.
    pub fn new(max_message_size: u32, max_chunk_count: u32) -> Self {
        Reassembler { max_message_size, max_chunk_count, pending: None }
    }

    /// True while a message is half-received.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Adds one verified chunk body. Returns a message when `chunk_type` completes or aborts one.
    pub fn push(
        &mut self,
        message_type: MessageType,
        chunk_type: ChunkType,
        request_id: u32,
        body: &[u8],
    ) -> Result<Option<Assembled>> {
        if let Some((pending_id, pending_type)) = self.pending.as_ref().map(|p| (p.request_id, p.message_type)) {
            if pending_id != request_id || pending_type != message_type {
                self.pending = None;
                return Err(Error::Decoding(format!(
                    "a chunk of request {request_id} arrived while request {pending_id} was incomplete"
                )));
            }
        }
        if chunk_type == ChunkType::Abort {
            self.pending = None;
            let (status, reason) = decode_abort_body(body)?;
            return Ok(Some(Assembled::Aborted { request_id, status, reason }));
        }
        let mut p = self.pending.take().unwrap_or(Partial { message_type, request_id, body: Vec::new(), chunks: 0 });
        p.chunks = p.chunks.saturating_add(1);
        if self.max_chunk_count != 0 && p.chunks > self.max_chunk_count {
            return Err(Error::MessageTooLarge {
                what: "message chunk count",
                size: p.chunks.into(),
                limit: self.max_chunk_count.into(),
            });
        }
        let size = p.body.len() as u64 + body.len() as u64;
        if self.max_message_size != 0 && size > u64::from(self.max_message_size) {
            return Err(Error::MessageTooLarge { what: "message", size, limit: self.max_message_size.into() });
        }
        p.body.extend_from_slice(body);
        match chunk_type {
            ChunkType::Intermediate => {
                self.pending = Some(p);
                Ok(None)
            }
            _ => Ok(Some(Assembled::Complete { message_type, request_id, body: p.body })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(t: &[u8; 3], c: u8, size: u32, id: u32) -> Vec<u8> {
        let mut v = t.to_vec();
        v.push(c);
        v.extend(size.to_le_bytes());
        v.extend(id.to_le_bytes());
        v
    }

    #[test]
    fn chunk_header_round_trips_and_checks() {
        let h = ChunkHeader {
            message_type: MessageType::Message,
            chunk_type: ChunkType::Intermediate,
            message_size: 24,
            secure_channel_id: 7,
        };
        let mut bytes = Vec::new();
        h.encode(&mut bytes);
        bytes.extend([0u8; 12]);
        assert_eq!(ChunkHeader::decode(&bytes).unwrap(), h);
        // Size mismatch (truncated chunk).
        assert_eq!(ChunkHeader::decode(&bytes[..23]).unwrap_err().status_code(), StatusCode::BadDecodingError);
        // Intermediate OPN.
        let mut opn = header_bytes(b"OPN", b'C', 32, 0);
        opn.resize(32, 0);
        assert_eq!(ChunkHeader::decode(&opn).unwrap_err().status_code(), StatusCode::BadTcpMessageTypeInvalid);
        // A UACP type where a chunk should be.
        let mut hel = header_bytes(b"HEL", b'F', 32, 0);
        hel.resize(32, 0);
        assert_eq!(ChunkHeader::decode(&hel).unwrap_err().status_code(), StatusCode::BadTcpMessageTypeInvalid);
        assert!(ChunkHeader::decode(b"MSG").is_err());
    }

    #[test]
    fn sequence_header_round_trips() {
        let s = SequenceHeader { sequence_number: 51, request_id: 3 };
        let mut v = Vec::new();
        s.encode(&mut v);
        assert_eq!(SequenceHeader::decode(&v).unwrap(), s);
        assert!(SequenceHeader::decode(&v[..7]).is_err());
    }

    fn aes_layout() -> ChunkLayout {
        ChunkLayout {
            security_header_len: 4,
            signature_len: 32,
            encryption: Some(Blocks { plain: 16, cipher: 16 }),
            extra_padding: false,
        }
    }

    #[test]
    fn padding_aligns_the_encrypted_region_and_verifies() {
        for layout in [
            aes_layout(),
            ChunkLayout {
                security_header_len: 100,
                signature_len: 512,
                encryption: Some(Blocks { plain: 470, cipher: 512 }),
                extra_padding: true,
            },
        ] {
            for body_len in 0..600 {
                let plain_len = layout.plaintext_len(body_len);
                let b = layout.encryption.unwrap();
                assert_eq!(plain_len % b.plain, 0, "body {body_len}");
                let mut plain = vec![0xAB; SEQUENCE_HEADER_LEN + body_len];
                layout.write_padding(&mut plain, body_len);
                assert_eq!(plain.len() + layout.signature_len, plain_len);
                assert_eq!(layout.check_padding(&plain).unwrap(), SEQUENCE_HEADER_LEN + body_len);
            }
        }
    }

    #[test]
    fn tampered_padding_is_rejected() {
        let layout = aes_layout();
        let mut plain = vec![0u8; SEQUENCE_HEADER_LEN + 5];
        layout.write_padding(&mut plain, 5);
        let n = plain.len();
        for i in (SEQUENCE_HEADER_LEN + 5)..n {
            let mut bad = plain.clone();
            bad[i] ^= 1;
            assert_eq!(layout.check_padding(&bad).unwrap_err().status_code(), StatusCode::BadSecurityChecksFailed);
        }
        // A padding count that reaches into the headers.
        let bad = vec![200u8; 20];
        assert!(layout.check_padding(&bad).is_err());
        assert!(layout.check_padding(&[]).is_err());
    }

    #[test]
    fn max_body_fits_the_chunk_exactly() {
        for layout in [
            aes_layout(),
            ChunkLayout { security_header_len: 4, signature_len: 20, encryption: None, extra_padding: false },
            ChunkLayout {
                security_header_len: 1300,
                signature_len: 256,
                encryption: Some(Blocks { plain: 214, cipher: 256 }),
                extra_padding: false,
            },
        ] {
            for chunk in [8192usize, 8193, 65535] {
                let max = layout.max_body_len(chunk).unwrap();
                assert!(layout.chunk_len(max) <= chunk, "{layout:?} {chunk}");
                // The maximum fills the last block exactly, so one byte more needs a block that does not fit.
                assert!(layout.chunk_len(max + 1) > chunk);
            }
        }
        assert!(aes_layout().max_body_len(40).is_err());
    }

    #[test]
    fn split_respects_peer_limits() {
        let body = vec![0u8; 1000];
        assert_eq!(split_body(&body, 300, 0, 0, Role::Client).unwrap().len(), 4);
        assert_eq!(split_body(&[], 300, 0, 0, Role::Client).unwrap().len(), 1);
        let e = split_body(&body, 300, 999, 0, Role::Client).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadRequestTooLarge);
        let e = split_body(&body, 300, 0, 3, Role::Server).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadResponseTooLarge);
        assert!(split_body(&body, 300, 1000, 4, Role::Server).is_ok());
    }

    #[test]
    fn reassembly_joins_chunks_and_enforces_limits() {
        let mut r = Reassembler::new(10, 3);
        assert_eq!(r.push(MessageType::Message, ChunkType::Intermediate, 1, b"abc").unwrap(), None);
        assert!(r.is_pending());
        assert_eq!(
            r.push(MessageType::Message, ChunkType::Final, 1, b"de").unwrap(),
            Some(Assembled::Complete { message_type: MessageType::Message, request_id: 1, body: b"abcde".to_vec() })
        );
        // Too many chunks.
        for _ in 0..3 {
            r.push(MessageType::Message, ChunkType::Intermediate, 2, b"").unwrap();
        }
        let e = r.push(MessageType::Message, ChunkType::Final, 2, b"").unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadTcpMessageTooLarge);
        // Too many bytes.
        let mut r = Reassembler::new(10, 0);
        r.push(MessageType::Message, ChunkType::Intermediate, 3, &[0; 6]).unwrap();
        let e = r.push(MessageType::Message, ChunkType::Final, 3, &[0; 5]).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadTcpMessageTooLarge);
        // No limit.
        let mut r = Reassembler::new(0, 0);
        assert!(r.push(MessageType::Message, ChunkType::Final, 3, &[0; 100_000]).unwrap().is_some());
    }

    #[test]
    fn interleaved_chunks_are_rejected_and_abort_discards() {
        let mut r = Reassembler::new(0, 0);
        r.push(MessageType::Message, ChunkType::Intermediate, 1, b"abc").unwrap();
        assert!(r.push(MessageType::Message, ChunkType::Final, 2, b"x").is_err());
        assert!(!r.is_pending());
        r.push(MessageType::Message, ChunkType::Intermediate, 5, b"abc").unwrap();
        let abort = encode_abort_body(StatusCode::BadResponseTooLarge, "too big");
        assert_eq!(
            r.push(MessageType::Message, ChunkType::Abort, 5, &abort).unwrap(),
            Some(Assembled::Aborted {
                request_id: 5,
                status: StatusCode::BadResponseTooLarge,
                reason: "too big".into()
            })
        );
        assert!(!r.is_pending());
        assert!(r.push(MessageType::Message, ChunkType::Abort, 6, &[1, 2]).is_err());
    }
}
