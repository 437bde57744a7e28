//! Symmetric chunk security for MSG and CLO (Part 6 §6.7.2): the TokenId security header, HMAC signatures, AES-CBC
//! encryption with OPC UA's own padding, and the checks on receipt (constant-time MAC comparison before the padding
//! is looked at).
//!
//! Order on send: padding → MAC over header..padding → encrypt sequence header..MAC. On receipt the reverse.

use std::fmt;

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::iv::FixedLength;

use super::chunk::{Blocks, ChunkHeader, ChunkLayout, SequenceHeader, CHUNK_HEADER_LEN, SEQUENCE_HEADER_LEN};
use super::keys::DerivedKeys;
use super::mac::ChunkMac;
use super::policy::{SecurityMode, SecurityPolicy};
use crate::error::{Error, Result};
use crate::transport::uacp::{ChunkType, MessageType};
use crate::wire::{self, Reader};

/// The symmetric security header is one UInt32: the TokenId.
pub const SYMMETRIC_HEADER_LEN: usize = 4;
const AES_BLOCK: usize = 16;

/// Reads the TokenId of a MSG/CLO chunk without verifying anything, so the receiver can pick the keys.
pub fn peek_token_id(chunk: &[u8]) -> Result<u32> {
    let mut r = Reader::new(chunk);
    r.bytes(CHUNK_HEADER_LEN, "chunk header")?;
    r.u32("TokenId")
}

struct Crypto {
    mac: ChunkMac,
    mac_len: usize,
    iv: [u8; AES_BLOCK],
    aes: Option<UnboundParts>,
}

/// AES keys of one direction, built once per token.
enum UnboundParts {
    Encrypt(EncryptingKey),
    Decrypt(DecryptingKey),
}

fn aes_key(policy: SecurityPolicy, keys: &DerivedKeys) -> Result<UnboundCipherKey> {
    let alg = match policy.encrypting_key_len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(Error::Crypto("no AES key length for this policy")),
    };
    UnboundCipherKey::new(alg, keys.encrypting_key()).map_err(|_| Error::Crypto("AES key rejected"))
}

fn crypto(policy: SecurityPolicy, mode: SecurityMode, keys: &DerivedKeys, encrypt: bool) -> Result<Option<Crypto>> {
    mode.check(policy)?;
    let Some(sig) = policy.symmetric_signature() else { return Ok(None) };
    let iv: [u8; AES_BLOCK] = keys.iv().try_into().map_err(|_| Error::Crypto("IV is not 16 bytes"))?;
    let aes = if mode == SecurityMode::SignAndEncrypt {
        let key = aes_key(policy, keys)?;
        Some(if encrypt {
            UnboundParts::Encrypt(EncryptingKey::cbc(key).map_err(|_| Error::Crypto("AES-CBC key"))?)
        } else {
            UnboundParts::Decrypt(DecryptingKey::cbc(key).map_err(|_| Error::Crypto("AES-CBC key"))?)
        })
    } else {
        None
    };
    Ok(Some(Crypto { mac: ChunkMac::new(sig, keys.signing_key()), mac_len: sig.len(), iv, aes }))
}

fn layout(crypto: Option<&Crypto>) -> ChunkLayout {
    ChunkLayout {
        security_header_len: SYMMETRIC_HEADER_LEN,
        signature_len: crypto.map_or(0, |c| c.mac_len),
        encryption: crypto.and_then(|c| c.aes.as_ref()).map(|_| Blocks { plain: AES_BLOCK, cipher: AES_BLOCK }),
        extra_padding: false,
    }
}

/// Secures outgoing MSG/CLO chunks with one token's keys (ours: client keys if we are the client).
pub struct SymmetricSealer {
    crypto: Option<Crypto>,
}

impl fmt::Debug for SymmetricSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricSealer").field("layout", &layout(self.crypto.as_ref())).finish_non_exhaustive()
    }
}

impl SymmetricSealer {
    /// Keys for sending. For policy None pass any keys (they are ignored); use [`SymmetricSealer::none`].
    pub fn new(policy: SecurityPolicy, mode: SecurityMode, keys: &DerivedKeys) -> Result<Self> {
        Ok(SymmetricSealer { crypto: crypto(policy, mode, keys, true)? })
    }

    /// The sealer of policy None: chunks go out unsigned and in clear.
    pub fn none() -> Self {
        SymmetricSealer { crypto: None }
    }

    /// The size arithmetic of chunks this sealer makes.
    pub fn layout(&self) -> ChunkLayout {
        layout(self.crypto.as_ref())
    }

    /// Builds one secured chunk around `body`.
    pub fn seal(
        &self,
        message_type: MessageType,
        chunk_type: ChunkType,
        secure_channel_id: u32,
        token_id: u32,
        sequence: SequenceHeader,
        body: &[u8],
    ) -> Result<Vec<u8>> {
        if !matches!(message_type, MessageType::Message | MessageType::CloseSecureChannel) {
            return Err(Error::MessageTypeInvalid(format!("{message_type} is not symmetrically secured")));
        }
        let layout = self.layout();
        let size = layout.chunk_len(body.len());
        let message_size =
            u32::try_from(size).map_err(|_| Error::EncodingLimitsExceeded(format!("chunk of {size} bytes")))?;
        let mut out = Vec::with_capacity(size);
        ChunkHeader { message_type, chunk_type, message_size, secure_channel_id }.encode(&mut out);
        wire::put_u32(&mut out, token_id);
        sequence.encode(&mut out);
        out.extend_from_slice(body);
        let Some(crypto) = &self.crypto else { return Ok(out) };
        layout.write_padding(&mut out, body.len());
        let tag = crypto.mac.sign(&out);
        out.extend_from_slice(tag.as_ref());
        if let Some(UnboundParts::Encrypt(key)) = &crypto.aes {
            let region = out.get_mut(CHUNK_HEADER_LEN + SYMMETRIC_HEADER_LEN..).ok_or(Error::Crypto("chunk layout"))?;
            key.less_safe_encrypt(region, EncryptionContext::Iv128(FixedLength::from(crypto.iv)))
                .map_err(|_| Error::Crypto("AES-CBC encryption"))?;
        }
        debug_assert_eq!(out.len(), size);
        Ok(out)
    }
}

/// A verified, decrypted MSG/CLO chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedChunk {
    /// The chunk header.
    pub header: ChunkHeader,
    /// The token the chunk was secured with.
    pub token_id: u32,
    /// Sequence number and request id.
    pub sequence: SequenceHeader,
    /// The decrypted chunk; the body is `data[body]`. Kept whole so a large message's chunks are not copied once
    /// more just to cut off their headers and padding (the reassembler copies the body once, where it belongs).
    data: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl OpenedChunk {
    /// The body, without headers, padding or signature.
    pub fn body(&self) -> &[u8] {
        self.data.get(self.body.clone()).unwrap_or_default()
    }

    /// The body as an owned buffer.
    pub fn into_body(mut self) -> Vec<u8> {
        self.data.truncate(self.body.end);
        self.data.drain(..self.body.start.min(self.data.len()));
        self.data
    }
}

/// Checks incoming MSG/CLO chunks with one token's keys (the peer's: server keys if we are the client).
pub struct SymmetricOpener {
    crypto: Option<Crypto>,
}

impl fmt::Debug for SymmetricOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricOpener").field("layout", &layout(self.crypto.as_ref())).finish_non_exhaustive()
    }
}

impl SymmetricOpener {
    /// Keys for receiving.
    pub fn new(policy: SecurityPolicy, mode: SecurityMode, keys: &DerivedKeys) -> Result<Self> {
        Ok(SymmetricOpener { crypto: crypto(policy, mode, keys, false)? })
    }

    /// The opener of policy None.
    pub fn none() -> Self {
        SymmetricOpener { crypto: None }
    }

    /// Verifies (and decrypts) a whole chunk. Every security failure is `BadSecurityChecksFailed`.
    pub fn open(&self, chunk: &[u8]) -> Result<OpenedChunk> {
        let header = ChunkHeader::decode(chunk)?;
        if header.message_type == MessageType::OpenSecureChannel {
            return Err(Error::MessageTypeInvalid("OPN is not symmetrically secured".into()));
        }
        let token_id = peek_token_id(chunk)?;
        let start = CHUNK_HEADER_LEN + SYMMETRIC_HEADER_LEN;
        let Some(crypto) = &self.crypto else {
            let mut r = Reader::new(chunk.get(start..).unwrap_or_default());
            let sequence = SequenceHeader::read(&mut r)?;
            let body = start + SEQUENCE_HEADER_LEN..chunk.len();
            return Ok(OpenedChunk { header, token_id, sequence, data: chunk.to_vec(), body });
        };
        let bad = |what| Error::SecurityChecksFailed(what);
        let mut data = chunk.to_vec();
        if let Some(UnboundParts::Decrypt(key)) = &crypto.aes {
            let region = data.get_mut(start..).ok_or_else(|| bad("chunk too short"))?;
            if region.is_empty() || !region.len().is_multiple_of(AES_BLOCK) {
                return Err(bad("encrypted region is not whole AES blocks"));
            }
            key.decrypt(region, DecryptionContext::Iv128(FixedLength::from(crypto.iv)))
                .map_err(|_| bad("AES-CBC decryption"))?;
        }
        let mac_at = data.len().checked_sub(crypto.mac_len).filter(|&at| at >= start + SEQUENCE_HEADER_LEN);
        let mac_at = mac_at.ok_or_else(|| bad("chunk too short for its signature"))?;
        let (signed, tag) = data.split_at(mac_at);
        // Compared in constant time.
        if !crypto.mac.verify(signed, tag) {
            return Err(bad("MAC"));
        }
        let plain = signed.get(start..).ok_or_else(|| bad("chunk layout"))?;
        let body_end = if crypto.aes.is_some() { layout(Some(crypto)).check_padding(plain)? } else { plain.len() };
        let mut r = Reader::new(plain);
        let sequence = SequenceHeader::read(&mut r)?;
        if body_end < SEQUENCE_HEADER_LEN {
            return Err(bad("padding"));
        }
        let body = start + SEQUENCE_HEADER_LEN..start + body_end;
        Ok(OpenedChunk { header, token_id, sequence, data, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::keys::ChannelKeys;
    use opcua_types::StatusCode;

    const SECURED: [SecurityPolicy; 5] = [
        SecurityPolicy::Basic128Rsa15,
        SecurityPolicy::Basic256,
        SecurityPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss,
    ];

    fn pair(policy: SecurityPolicy, mode: SecurityMode) -> (SymmetricSealer, SymmetricOpener) {
        let keys = ChannelKeys::derive(policy, &vec![1; policy.nonce_len()], &vec![2; policy.nonce_len()]).unwrap();
        (
            SymmetricSealer::new(policy, mode, &keys.client).unwrap(),
            SymmetricOpener::new(policy, mode, &keys.client).unwrap(),
        )
    }

    fn seq() -> SequenceHeader {
        SequenceHeader { sequence_number: 77, request_id: 5 }
    }

    #[test]
    fn round_trip_every_policy_and_mode() {
        for policy in SECURED {
            for mode in [SecurityMode::Sign, SecurityMode::SignAndEncrypt] {
                let (sealer, opener) = pair(policy, mode);
                for len in [0usize, 1, 15, 16, 17, 100, 1000, 8000] {
                    let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let chunk = sealer.seal(MessageType::Message, ChunkType::Final, 9, 3, seq(), &body).unwrap();
                    assert_eq!(chunk.len(), sealer.layout().chunk_len(len));
                    if mode == SecurityMode::SignAndEncrypt && len >= 16 {
                        assert!(!chunk.windows(16).any(|w| w == &body[..16]), "{policy} body visible");
                    }
                    let opened = opener.open(&chunk).unwrap();
                    assert_eq!(opened.body(), body, "{policy} {mode:?} {len}");
                    assert_eq!(opened.token_id, 3);
                    assert_eq!(opened.sequence, seq());
                    assert_eq!(opened.header.secure_channel_id, 9);
                }
            }
        }
    }

    #[test]
    fn none_round_trips_in_clear() {
        let chunk = SymmetricSealer::none()
            .seal(MessageType::CloseSecureChannel, ChunkType::Final, 1, 0, seq(), b"bye")
            .unwrap();
        assert!(chunk.ends_with(b"bye"));
        assert_eq!(SymmetricOpener::none().open(&chunk).unwrap().body(), b"bye");
    }

    #[test]
    fn tampering_anywhere_is_rejected() {
        for policy in SECURED {
            for mode in [SecurityMode::Sign, SecurityMode::SignAndEncrypt] {
                let (sealer, opener) = pair(policy, mode);
                let chunk = sealer.seal(MessageType::Message, ChunkType::Final, 9, 3, seq(), b"hello world").unwrap();
                // Header bytes (except MessageSize, which is structural) and every secured byte.
                for i in (0..chunk.len()).filter(|i| !(4..8).contains(i) && *i != 3) {
                    let mut bad = chunk.clone();
                    bad[i] ^= 0x40;
                    let e = opener.open(&bad).unwrap_err();
                    assert!(
                        matches!(
                            e.status_code(),
                            StatusCode::BadSecurityChecksFailed | StatusCode::BadTcpMessageTypeInvalid
                        ),
                        "{policy} {mode:?} byte {i}: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_keys_and_truncation_are_rejected() {
        let policy = SecurityPolicy::Basic256Sha256;
        let keys = ChannelKeys::derive(policy, &[1; 32], &[2; 32]).unwrap();
        let sealer = SymmetricSealer::new(policy, SecurityMode::SignAndEncrypt, &keys.client).unwrap();
        let wrong = SymmetricOpener::new(policy, SecurityMode::SignAndEncrypt, &keys.server).unwrap();
        let chunk = sealer.seal(MessageType::Message, ChunkType::Final, 9, 3, seq(), b"x").unwrap();
        assert_eq!(wrong.open(&chunk).unwrap_err().status_code(), StatusCode::BadSecurityChecksFailed);
        // Truncated but MessageSize patched to match: not whole blocks.
        let right = SymmetricOpener::new(policy, SecurityMode::SignAndEncrypt, &keys.client).unwrap();
        let mut short = chunk[..chunk.len() - 1].to_vec();
        let n = short.len() as u32;
        wire::patch_u32(&mut short, 4, n);
        assert_eq!(right.open(&short).unwrap_err().status_code(), StatusCode::BadSecurityChecksFailed);
        // Header only.
        let mut tiny = chunk[..24].to_vec();
        wire::patch_u32(&mut tiny, 4, 24);
        assert!(right.open(&tiny).is_err());
        // Sign mode: a chunk shorter than its MAC.
        let sign = SymmetricOpener::new(policy, SecurityMode::Sign, &keys.client).unwrap();
        assert_eq!(sign.open(&tiny).unwrap_err().status_code(), StatusCode::BadSecurityChecksFailed);
    }

    #[test]
    fn tampered_padding_under_a_valid_mac_is_rejected() {
        // Build a chunk by hand whose padding is wrong but whose MAC and encryption are right, so only the
        // padding check can catch it.
        let policy = SecurityPolicy::Aes256Sha256RsaPss;
        let keys = ChannelKeys::derive(policy, &[1; 32], &[2; 32]).unwrap();
        let sealer = SymmetricSealer::new(policy, SecurityMode::SignAndEncrypt, &keys.client).unwrap();
        let opener = SymmetricOpener::new(policy, SecurityMode::SignAndEncrypt, &keys.client).unwrap();
        let crypto = sealer.crypto.as_ref().unwrap();
        let layout = sealer.layout();
        let body = b"abc";
        let mut out = Vec::new();
        let size = layout.chunk_len(body.len()) as u32;
        ChunkHeader {
            message_type: MessageType::Message,
            chunk_type: ChunkType::Final,
            message_size: size,
            secure_channel_id: 1,
        }
        .encode(&mut out);
        wire::put_u32(&mut out, 1);
        seq().encode(&mut out);
        out.extend_from_slice(body);
        let pad_at = out.len();
        layout.write_padding(&mut out, body.len());
        out[pad_at + 1] ^= 1;
        let tag = crypto.mac.sign(&out);
        out.extend_from_slice(tag.as_ref());
        if let Some(UnboundParts::Encrypt(key)) = &crypto.aes {
            key.less_safe_encrypt(&mut out[16..], EncryptionContext::Iv128(FixedLength::from(crypto.iv))).unwrap();
        }
        assert_eq!(opener.open(&out).unwrap_err().status_code(), StatusCode::BadSecurityChecksFailed);
    }

    #[test]
    fn opn_and_mode_mismatch_are_refused() {
        let (sealer, _) = pair(SecurityPolicy::Basic256Sha256, SecurityMode::Sign);
        assert!(sealer.seal(MessageType::OpenSecureChannel, ChunkType::Final, 1, 1, seq(), b"").is_err());
        let keys = ChannelKeys::derive(SecurityPolicy::Basic256Sha256, &[1; 32], &[2; 32]).unwrap();
        assert!(SymmetricSealer::new(SecurityPolicy::Basic256Sha256, SecurityMode::None, &keys.client).is_err());
        assert_eq!(peek_token_id(&[0; 15]).unwrap_err().status_code(), StatusCode::BadDecodingError);
    }
}
