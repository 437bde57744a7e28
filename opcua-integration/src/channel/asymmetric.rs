//! Asymmetric chunk security for OpenSecureChannel (Part 6 §6.7.2.3, §6.7.2.5): the asymmetric security header,
//! signing with our [`certvault::VaultKey`], block-wise RSA encryption to the peer's certificate, and on receipt block-wise
//! decryption in the vault (one `decrypt` call per RSA block), signature verification with the sender's certificate
//! and the padding checks, including ExtraPaddingSize when the receiver's key is longer than 2048 bits.
//!
//! An OPN message is always one chunk, and with any policy but None it is signed and encrypted even in Sign mode.

use std::fmt;
use std::sync::Arc;

use certvault::{KeyAlgorithm, PublicKey, SharedKey};

use super::chunk::{Blocks, ChunkHeader, ChunkLayout, SequenceHeader, CHUNK_HEADER_LEN, SEQUENCE_HEADER_LEN};
use super::policy::{DeprecatedPolicies, SecurityPolicy};
use crate::error::{Error, Result};
use crate::transport::uacp::{ChunkType, MessageType};
use crate::wire::{self, Reader};

/// Longest SecurityPolicyUri, in bytes (Part 6 §6.7.2.3).
pub const MAX_POLICY_URI_LEN: usize = 255;
/// Length of a ReceiverCertificateThumbprint: SHA-1.
pub const THUMBPRINT_LEN: usize = 20;

/// SHA-1 of a DER certificate: the OPC UA certificate thumbprint.
pub fn thumbprint(der: &[u8]) -> [u8; THUMBPRINT_LEN] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let mut out = [0u8; THUMBPRINT_LEN];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The first certificate of a DER chain (SenderCertificate may carry the issuers after the leaf).
pub fn leaf_certificate(chain: &[u8]) -> Result<&[u8]> {
    let bad = |why: &str| Error::CertificateInvalid(format!("not a DER certificate: {why}"));
    let mut r = Reader::new(chain);
    if r.u8("certificate tag").map_err(|_| bad("empty"))? != 0x30 {
        return Err(bad("does not start with a SEQUENCE"));
    }
    let first = r.u8("certificate length").map_err(|_| bad("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad("unsupported length encoding"));
        }
        let bytes = r.bytes(n, "certificate length").map_err(|_| bad("truncated length"))?;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let end = r.position().checked_add(len).ok_or_else(|| bad("length overflows"))?;
    chain.get(..end).ok_or_else(|| bad("truncated"))
}

fn rsa_bits(key: KeyAlgorithm) -> Result<u32> {
    match key {
        KeyAlgorithm::Rsa { bits } => Ok(bits),
        other => Err(Error::CertificatePolicyCheckFailed(format!("RSA policies need an RSA key, not {other}"))),
    }
}

/// Our application instance: a vault key handle and the certificate (chain) that names its public key.
///
/// Cloning is cheap (two reference counts): every request's channel information carries one.
#[derive(Clone)]
pub struct LocalIdentity {
    key: SharedKey,
    chain: Arc<[u8]>,
    leaf_len: usize,
    thumbprint: [u8; THUMBPRINT_LEN],
}

impl fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("key", &self.key.info().label)
            .field("thumbprint", &HexBytes(&self.thumbprint))
            .finish_non_exhaustive()
    }
}

struct HexBytes<'a>(&'a [u8]);

impl fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl LocalIdentity {
    /// Pairs a vault key with its certificate (DER leaf, optionally followed by issuer certificates). Refuses a
    /// certificate whose public key is not the key's, which would make every signature fail at the peer.
    pub fn new(key: SharedKey, certificate_chain: Vec<u8>) -> Result<Self> {
        let leaf = leaf_certificate(&certificate_chain)?;
        let public = PublicKey::from_certificate(leaf).map_err(|e| Error::CertificateInvalid(e.to_string()))?;
        if public.spki_der() != key.info().spki_der.as_slice() {
            return Err(Error::CertificateInvalid(format!(
                "the certificate does not certify vault key {:?}",
                key.info().label
            )));
        }
        let (leaf_len, thumbprint) = (leaf.len(), thumbprint(leaf));
        Ok(LocalIdentity { key, chain: certificate_chain.into(), leaf_len, thumbprint })
    }

    /// The vault key handle.
    pub fn key(&self) -> &SharedKey {
        &self.key
    }

    /// The DER leaf certificate.
    pub fn certificate(&self) -> &[u8] {
        self.chain.get(..self.leaf_len).unwrap_or_default()
    }

    /// The leaf followed by any issuers, as SenderCertificate carries it.
    pub fn certificate_chain(&self) -> &[u8] {
        &self.chain
    }

    /// SHA-1 of the leaf certificate.
    pub fn thumbprint(&self) -> &[u8; THUMBPRINT_LEN] {
        &self.thumbprint
    }

    /// The key's kind and size.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key.info().algorithm
    }
}

/// The peer's certificate, parsed once: its leaf, public key and thumbprint. Cheap to clone (shared): every request
/// of a channel hands it to the service layer.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    inner: Arc<ParsedPeer>,
}

#[derive(Debug)]
struct ParsedPeer {
    chain: Vec<u8>,
    leaf_len: usize,
    public_key: PublicKey,
    thumbprint: [u8; THUMBPRINT_LEN],
}

impl PeerCertificate {
    /// Parses a DER certificate or chain (leaf first). Unparsable input is `BadCertificateInvalid`.
    /// Trust is decided elsewhere (the PKI store); this only makes the key usable.
    pub fn from_der(chain: &[u8]) -> Result<Self> {
        let leaf = leaf_certificate(chain)?;
        let public_key = PublicKey::from_certificate(leaf).map_err(|e| Error::CertificateInvalid(e.to_string()))?;
        let parsed =
            ParsedPeer { chain: chain.to_vec(), leaf_len: leaf.len(), public_key, thumbprint: thumbprint(leaf) };
        Ok(PeerCertificate { inner: Arc::new(parsed) })
    }

    /// The DER leaf certificate.
    pub fn certificate(&self) -> &[u8] {
        self.inner.chain.get(..self.inner.leaf_len).unwrap_or_default()
    }

    /// The whole chain as received.
    pub fn certificate_chain(&self) -> &[u8] {
        &self.inner.chain
    }

    /// The leaf's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.inner.public_key
    }

    /// SHA-1 of the leaf.
    pub fn thumbprint(&self) -> &[u8; THUMBPRINT_LEN] {
        &self.inner.thumbprint
    }
}

/// The security header of an OPN chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsymmetricSecurityHeader {
    /// The policy URI.
    pub security_policy_uri: String,
    /// The sender's certificate chain; `None` when not signed (policy None).
    pub sender_certificate: Option<Vec<u8>>,
    /// SHA-1 of the receiver's certificate; `None` when not encrypted.
    pub receiver_certificate_thumbprint: Option<Vec<u8>>,
}

impl AsymmetricSecurityHeader {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        wire::byte_string_len(Some(self.security_policy_uri.as_bytes()))
            + wire::byte_string_len(self.sender_certificate.as_deref())
            + wire::byte_string_len(self.receiver_certificate_thumbprint.as_deref())
    }

    /// Appends the header.
    pub fn encode(&self, out: &mut Vec<u8>) {
        wire::put_byte_string(out, Some(self.security_policy_uri.as_bytes()));
        wire::put_byte_string(out, self.sender_certificate.as_deref());
        wire::put_byte_string(out, self.receiver_certificate_thumbprint.as_deref());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let uri = r.string(MAX_POLICY_URI_LEN, "SecurityPolicyUri")?.unwrap_or_default().to_owned();
        let cert = r.byte_string(usize::MAX, "SenderCertificate")?.map(<[u8]>::to_vec);
        let thumb = r.byte_string(usize::MAX, "ReceiverCertificateThumbprint")?.map(<[u8]>::to_vec);
        // Empty byte strings mean "absent" as much as null ones do.
        let cert = cert.filter(|c| !c.is_empty());
        let thumb = thumb.filter(|t| !t.is_empty());
        Ok(AsymmetricSecurityHeader {
            security_policy_uri: uri,
            sender_certificate: cert,
            receiver_certificate_thumbprint: thumb,
        })
    }

    /// Parses the security header of a whole OPN chunk (after its 12-byte chunk header).
    pub fn decode(chunk: &[u8]) -> Result<Self> {
        let mut r = Reader::new(chunk);
        r.bytes(CHUNK_HEADER_LEN, "chunk header")?;
        Self::read(&mut r)
    }
}

/// The size arithmetic of an OPN chunk sent by a `sender_key` to a `receiver_key`.
pub fn open_layout(
    policy: SecurityPolicy,
    security_header_len: usize,
    sender_key: KeyAlgorithm,
    receiver_key: KeyAlgorithm,
) -> Result<ChunkLayout> {
    let (Some(_), Some(enc)) = (policy.asymmetric_signature(), policy.asymmetric_encryption()) else {
        return Ok(ChunkLayout { security_header_len, signature_len: 0, encryption: None, extra_padding: false });
    };
    let receiver_bits = rsa_bits(receiver_key)?;
    rsa_bits(sender_key)?;
    let cipher = receiver_key.signature_len();
    let plain = enc.max_plaintext(cipher);
    if plain == 0 {
        return Err(Error::CertificatePolicyCheckFailed(format!("a {receiver_bits}-bit key is too short for {enc}")));
    }
    Ok(ChunkLayout {
        security_header_len,
        signature_len: sender_key.signature_len(),
        encryption: Some(Blocks { plain, cipher }),
        extra_padding: receiver_bits > 2048,
    })
}

/// Builds a secured OPN chunk: signed by `local`'s vault key, encrypted to `peer`. With policy None neither is
/// needed and the chunk goes out in clear. Fails if the chunk would exceed `max_chunk_size` (OPN is one chunk).
pub fn seal_open(
    policy: SecurityPolicy,
    local: Option<&LocalIdentity>,
    peer: Option<&PeerCertificate>,
    secure_channel_id: u32,
    sequence: SequenceHeader,
    body: &[u8],
    max_chunk_size: usize,
) -> Result<Vec<u8>> {
    let secured = match (policy.asymmetric_signature(), local, peer) {
        (None, _, _) => None,
        (Some(_), Some(local), Some(peer)) => Some((local, peer)),
        (Some(_), _, _) => {
            return Err(Error::InvalidState(
                "a secured OpenSecureChannel needs our identity and the peer's certificate",
            ))
        }
    };
    let security = AsymmetricSecurityHeader {
        security_policy_uri: policy.uri().to_owned(),
        sender_certificate: secured.map(|(local, _)| local.certificate_chain().to_vec()),
        receiver_certificate_thumbprint: secured.map(|(_, peer)| peer.thumbprint().to_vec()),
    };
    let layout = match secured {
        None => ChunkLayout {
            security_header_len: security.encoded_len(),
            signature_len: 0,
            encryption: None,
            extra_padding: false,
        },
        Some((local, peer)) => {
            policy.check_key_bits(rsa_bits(local.key_algorithm())?)?;
            policy.check_key_bits(rsa_bits(peer.public_key().algorithm())?)?;
            open_layout(policy, security.encoded_len(), local.key_algorithm(), peer.public_key().algorithm())?
        }
    };
    let size = layout.chunk_len(body.len());
    if size > max_chunk_size {
        return Err(Error::EncodingLimitsExceeded(format!(
            "the OpenSecureChannel chunk needs {size} bytes but the buffer is {max_chunk_size}"
        )));
    }
    let message_size = u32::try_from(size).map_err(|_| Error::EncodingLimitsExceeded(format!("{size} bytes")))?;
    let mut out = Vec::with_capacity(size);
    ChunkHeader {
        message_type: MessageType::OpenSecureChannel,
        chunk_type: ChunkType::Final,
        message_size,
        secure_channel_id,
    }
    .encode(&mut out);
    security.encode(&mut out);
    let encrypted_from = out.len();
    sequence.encode(&mut out);
    out.extend_from_slice(body);
    let (Some(sign_alg), Some(enc_alg), Some((local, peer)), Some(blocks)) =
        (policy.asymmetric_signature(), policy.asymmetric_encryption(), secured, layout.encryption)
    else {
        return Ok(out);
    };
    layout.write_padding(&mut out, body.len());
    let signature = local.key().sign(sign_alg, &out)?;
    if signature.len() != layout.signature_len {
        return Err(Error::Crypto("the vault returned a signature of the wrong length"));
    }
    out.extend_from_slice(&signature);
    let plain = out.split_off(encrypted_from);
    for block in plain.chunks(blocks.plain) {
        let sealed = peer.public_key().encrypt(enc_alg, block)?;
        if sealed.len() != blocks.cipher {
            return Err(Error::Crypto("RSA encryption returned a block of the wrong length"));
        }
        out.extend_from_slice(&sealed);
    }
    debug_assert_eq!(out.len(), size);
    Ok(out)
}

/// A verified, decrypted OPN chunk.
#[derive(Clone, Debug)]
pub struct OpenedOpen {
    /// The chunk header.
    pub header: ChunkHeader,
    /// The policy the sender chose.
    pub policy: SecurityPolicy,
    /// The security header as received.
    pub security_header: AsymmetricSecurityHeader,
    /// The sender's certificate, whose key verified the signature (`None` with policy None).
    pub sender: Option<PeerCertificate>,
    /// Sequence number and request id.
    pub sequence: SequenceHeader,
    /// The body: an encoded OpenSecureChannelRequest or Response.
    pub body: Vec<u8>,
}

/// Verifies and decrypts an OPN chunk addressed to `local`. The receiver thumbprint must be ours
/// (`BadCertificateInvalid`), the policy known and enabled (`BadSecurityPolicyRejected`), the sender's key within
/// the policy (`BadCertificatePolicyCheckFailed`); decryption, signature and padding failures are
/// `BadSecurityChecksFailed`. Whether the sender is *trusted* is for the caller to decide with the PKI store.
pub fn open_open(chunk: &[u8], local: Option<&LocalIdentity>, deprecated: DeprecatedPolicies) -> Result<OpenedOpen> {
    open_open_vetted(chunk, local, deprecated, |_, _| Ok(()))
}

/// [`open_open`], with `vet` judging the sender's certificate before any private-key work. A server passes its trust
/// check here: a client it would refuse anyway must not cost a vault decryption per RSA block (with a token doing
/// tens of decryptions a second, untrusted clients could otherwise starve trusted ones).
pub fn open_open_vetted(
    chunk: &[u8],
    local: Option<&LocalIdentity>,
    deprecated: DeprecatedPolicies,
    vet: impl FnOnce(&PeerCertificate, SecurityPolicy) -> Result<()>,
) -> Result<OpenedOpen> {
    let header = ChunkHeader::decode(chunk)?;
    if header.message_type != MessageType::OpenSecureChannel {
        return Err(Error::MessageTypeInvalid(format!("expected OPN, got {}", header.message_type)));
    }
    let mut r = Reader::new(chunk);
    r.bytes(CHUNK_HEADER_LEN, "chunk header")?;
    let security_header = AsymmetricSecurityHeader::read(&mut r)?;
    let policy = SecurityPolicy::from_uri(&security_header.security_policy_uri, deprecated)?;
    let encrypted_from = r.position();
    let (Some(sign_alg), Some(enc_alg)) = (policy.asymmetric_signature(), policy.asymmetric_encryption()) else {
        let sequence = SequenceHeader::read(&mut r)?;
        let body = r.rest().to_vec();
        return Ok(OpenedOpen { header, policy, security_header, sender: None, sequence, body });
    };
    let local = local.ok_or_else(|| Error::SecurityPolicyRejected(format!("{policy} needs a certificate here")))?;
    let sender_der = security_header
        .sender_certificate
        .as_deref()
        .ok_or_else(|| Error::CertificateInvalid("the OpenSecureChannel carries no SenderCertificate".into()))?;
    let sender = PeerCertificate::from_der(sender_der)?;
    let sender_key = sender.public_key().algorithm();
    policy.check_key_bits(rsa_bits(sender_key)?)?;
    policy.check_key_bits(rsa_bits(local.key_algorithm())?)?;
    match security_header.receiver_certificate_thumbprint.as_deref() {
        Some(t) if t == local.thumbprint().as_slice() => {}
        Some(_) => {
            return Err(Error::CertificateInvalid("ReceiverCertificateThumbprint is not our certificate".into()))
        }
        None => return Err(Error::CertificateInvalid("the OpenSecureChannel carries no receiver thumbprint".into())),
    }
    vet(&sender, policy)?;
    let layout = open_layout(policy, encrypted_from - CHUNK_HEADER_LEN, sender_key, local.key_algorithm())?;
    let blocks = layout.encryption.ok_or(Error::Crypto("secured policy without encryption"))?;
    let bad = Error::SecurityChecksFailed;
    let encrypted = r.rest();
    if encrypted.is_empty() || !encrypted.len().is_multiple_of(blocks.cipher) {
        return Err(bad("the encrypted region is not whole RSA blocks"));
    }
    let mut signed = Vec::with_capacity(encrypted_from + encrypted.len() / blocks.cipher * blocks.plain);
    signed.extend_from_slice(chunk.get(..encrypted_from).unwrap_or_default());
    for block in encrypted.chunks(blocks.cipher) {
        // One vault call per RSA block: a token or daemon sees exactly one ciphertext block at a time.
        let plain = local.key().decrypt(enc_alg, block)?;
        if plain.len() != blocks.plain {
            return Err(bad("a decrypted block is not a full plaintext block"));
        }
        signed.extend_from_slice(&plain);
    }
    let sig_at = signed
        .len()
        .checked_sub(layout.signature_len)
        .filter(|&at| at >= encrypted_from + SEQUENCE_HEADER_LEN)
        .ok_or_else(|| bad("too short for its signature"))?;
    let (signed_part, signature) = signed.split_at(sig_at);
    sender.public_key().verify(sign_alg, signed_part, signature).map_err(|_| bad("signature"))?;
    let plain = signed_part.get(encrypted_from..).ok_or_else(|| bad("layout"))?;
    let body_end = layout.check_padding(plain)?;
    let sequence = SequenceHeader::decode(plain)?;
    let body = plain.get(SEQUENCE_HEADER_LEN..body_end).ok_or_else(|| bad("padding"))?.to_vec();
    Ok(OpenedOpen { header, policy, security_header, sender: Some(sender), sequence, body })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use certvault::csr::{self_signed, CsrRequest};
    use certvault::soft::{generate_pkcs8, SoftKey};
    use certvault::{DecryptAlg, KeyInfo, KeyPolicy, SignAlg, VaultKey};
    use opcua_types::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    use zeroize::Zeroizing;

    /// Wraps a key and counts the vault calls, to prove decrypt runs once per RSA block.
    #[derive(Debug)]
    pub(crate) struct CountingKey {
        inner: SharedKey,
        pub(crate) signs: AtomicUsize,
        pub(crate) decrypts: AtomicUsize,
    }

    impl VaultKey for CountingKey {
        fn info(&self) -> &KeyInfo {
            self.inner.info()
        }
        fn sign(&self, alg: SignAlg, msg: &[u8]) -> certvault::Result<Vec<u8>> {
            self.signs.fetch_add(1, Ordering::SeqCst);
            self.inner.sign(alg, msg)
        }
        fn decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> certvault::Result<Zeroizing<Vec<u8>>> {
            self.decrypts.fetch_add(1, Ordering::SeqCst);
            self.inner.decrypt(alg, ciphertext)
        }
    }

    fn soft_key(bits: u32, label: &str) -> SharedKey {
        let policy = KeyPolicy { allow_pkcs1v15_decrypt: true, ..KeyPolicy::default() };
        let pkcs8 = generate_pkcs8(KeyAlgorithm::Rsa { bits }).unwrap();
        Arc::new(SoftKey::from_pkcs8(pkcs8, label.as_bytes().to_vec(), label.into(), true, policy).unwrap())
    }

    /// A test identity: a SoftKey behind the `VaultKey` trait object and a self-signed certificate.
    pub(crate) fn identity(bits: u32, name: &str) -> (SharedKey, Vec<u8>) {
        let key = soft_key(bits, name);
        let req = CsrRequest {
            common_name: name.into(),
            application_uri: Some(format!("urn:certvault:test:{name}")),
            dns_names: vec!["localhost".into()],
            ..CsrRequest::default()
        };
        let cert = self_signed(key.as_ref(), &req, std::time::Duration::from_secs(3600)).unwrap();
        (key, cert)
    }

    type Cache = std::sync::Mutex<Vec<(u32, &'static str, SharedKey, Vec<u8>)>>;

    /// Keys are slow to make, so the tests share one per size and role.
    pub(crate) fn cached(bits: u32, name: &'static str) -> (SharedKey, Vec<u8>) {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = cache.lock().unwrap();
        if let Some((_, _, k, c)) = cache.iter().find(|(b, n, _, _)| *b == bits && *n == name) {
            return (k.clone(), c.clone());
        }
        let (k, c) = identity(bits, name);
        cache.push((bits, name, k.clone(), c.clone()));
        (k, c)
    }

    pub(crate) fn counting(bits: u32, name: &'static str) -> (Arc<CountingKey>, LocalIdentity) {
        let (key, cert) = cached(bits, name);
        let counting = Arc::new(CountingKey { inner: key, signs: AtomicUsize::new(0), decrypts: AtomicUsize::new(0) });
        let id = LocalIdentity::new(counting.clone(), cert).unwrap();
        (counting, id)
    }

    fn seq() -> SequenceHeader {
        SequenceHeader { sequence_number: 1, request_id: 1 }
    }

    const POLICIES: [SecurityPolicy; 3] =
        [SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes128Sha256RsaOaep, SecurityPolicy::Aes256Sha256RsaPss];

    #[test]
    fn round_trip_with_2048_and_4096_receivers() {
        let (client_count, client) = counting(2048, "client");
        for receiver_bits in [2048, 4096] {
            let (server_count, server) = counting(receiver_bits, "server");
            let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
            for policy in POLICIES {
                for body_len in [0usize, 1, 100, 213, 214, 215, 1000] {
                    let body: Vec<u8> = (0..body_len).map(|i| (i * 7) as u8).collect();
                    client_count.signs.store(0, Ordering::SeqCst);
                    server_count.decrypts.store(0, Ordering::SeqCst);
                    let chunk = seal_open(policy, Some(&client), Some(&server_cert), 0, seq(), &body, 8192).unwrap();
                    assert_eq!(client_count.signs.load(Ordering::SeqCst), 1);
                    let security = AsymmetricSecurityHeader::decode(&chunk).unwrap();
                    let encrypted = chunk.len() - CHUNK_HEADER_LEN - security.encoded_len();
                    let block = receiver_bits as usize / 8;
                    assert_eq!(encrypted % block, 0);
                    let opened = open_open(&chunk, Some(&server), DeprecatedPolicies::Reject).unwrap();
                    assert_eq!(
                        server_count.decrypts.load(Ordering::SeqCst),
                        encrypted / block,
                        "one vault decrypt per RSA block"
                    );
                    assert_eq!(opened.policy, policy);
                    assert_eq!(opened.body, body, "{policy} {receiver_bits} {body_len}");
                    assert_eq!(opened.sequence, seq());
                    assert_eq!(opened.sender.unwrap().certificate(), client.certificate());
                }
            }
        }
    }

    #[test]
    fn a_4096_bit_sender_and_extra_padding_over_many_lengths() {
        let (_, client) = counting(4096, "client");
        let (_, server) = counting(4096, "server");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        let layout =
            open_layout(SecurityPolicy::Aes256Sha256RsaPss, 0, client.key_algorithm(), server.key_algorithm()).unwrap();
        assert!(layout.extra_padding);
        for body_len in [0usize, 255, 256, 300, 445, 446, 447, 2000] {
            let body = vec![0x5a; body_len];
            let chunk = seal_open(
                SecurityPolicy::Aes256Sha256RsaPss,
                Some(&client),
                Some(&server_cert),
                3,
                seq(),
                &body,
                65535,
            )
            .unwrap();
            let opened = open_open(&chunk, Some(&server), DeprecatedPolicies::Reject).unwrap();
            assert_eq!(opened.body, body);
            assert_eq!(opened.header.secure_channel_id, 3);
        }
    }

    #[test]
    fn deprecated_policies_work_only_with_opt_in() {
        let (_, client) = counting(2048, "client");
        let (_, server) = counting(2048, "server");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        for policy in [SecurityPolicy::Basic128Rsa15, SecurityPolicy::Basic256] {
            let chunk = seal_open(policy, Some(&client), Some(&server_cert), 0, seq(), b"legacy", 8192).unwrap();
            let e = open_open(&chunk, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
            assert_eq!(e.status_code(), StatusCode::BadSecurityPolicyRejected);
            assert_eq!(open_open(&chunk, Some(&server), DeprecatedPolicies::Allow).unwrap().body, b"legacy");
        }
    }

    #[test]
    fn policy_none_goes_in_clear() {
        let (_, client) = counting(2048, "client");
        let chunk = seal_open(SecurityPolicy::None, Some(&client), None, 0, seq(), b"hello", 8192).unwrap();
        assert!(chunk.ends_with(b"hello"));
        let opened = open_open(&chunk, None, DeprecatedPolicies::Reject).unwrap();
        assert_eq!(opened.body, b"hello");
        assert!(opened.sender.is_none());
    }

    #[test]
    fn wrong_receiver_thumbprint_is_certificate_invalid() {
        let (_, client) = counting(2048, "client");
        let (_, server) = counting(2048, "server");
        let (_, other) = counting(2048, "other");
        let other_cert = PeerCertificate::from_der(other.certificate()).unwrap();
        let chunk =
            seal_open(SecurityPolicy::Basic256Sha256, Some(&client), Some(&other_cert), 0, seq(), b"x", 8192).unwrap();
        let e = open_open(&chunk, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadCertificateInvalid);
    }

    /// Re-frames a sealed OPN with a replaced security header (and the matching MessageSize).
    fn with_security_header(chunk: &[u8], f: impl FnOnce(&mut AsymmetricSecurityHeader)) -> Vec<u8> {
        let mut security = AsymmetricSecurityHeader::decode(chunk).unwrap();
        let rest = &chunk[CHUNK_HEADER_LEN + security.encoded_len()..];
        f(&mut security);
        let mut out = chunk[..CHUNK_HEADER_LEN].to_vec();
        security.encode(&mut out);
        out.extend_from_slice(rest);
        let n = out.len() as u32;
        wire::patch_u32(&mut out, 4, n);
        out
    }

    #[test]
    fn unknown_policy_uri_is_rejected() {
        let (_, client) = counting(2048, "client");
        let (_, server) = counting(2048, "server");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        let chunk =
            seal_open(SecurityPolicy::Basic256Sha256, Some(&client), Some(&server_cert), 0, seq(), b"x", 8192).unwrap();
        let bad = with_security_header(&chunk, |h| h.security_policy_uri = "http://example.com/#Rot13".into());
        let e = open_open(&bad, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadSecurityPolicyRejected);
        let long = with_security_header(&chunk, |h| h.security_policy_uri = "x".repeat(256));
        let e = open_open(&long, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadEncodingLimitsExceeded);
    }

    #[test]
    fn bad_signature_and_tampered_ciphertext_are_rejected() {
        let (_, client) = counting(2048, "client");
        let (_, server) = counting(2048, "server");
        let (_, mallory) = counting(2048, "other");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        for policy in POLICIES {
            let chunk = seal_open(policy, Some(&client), Some(&server_cert), 0, seq(), b"open sesame", 8192).unwrap();
            // Claiming another sender: its key does not verify the signature.
            let forged = with_security_header(&chunk, |h| h.sender_certificate = Some(mallory.certificate().to_vec()));
            let e = open_open(&forged, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
            assert_eq!(e.status_code(), StatusCode::BadSecurityChecksFailed, "{policy}");
            // A flipped ciphertext byte at the start and at the end of the last block.
            for at in [chunk.len() - 1, chunk.len() - 256] {
                let mut bad = chunk.clone();
                bad[at] ^= 1;
                let e = open_open(&bad, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
                assert_eq!(e.status_code(), StatusCode::BadSecurityChecksFailed, "{policy}");
            }
            // A flipped cleartext header byte (the secure channel id) breaks the signature.
            let mut bad = chunk.clone();
            bad[8] ^= 1;
            let e = open_open(&bad, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
            assert_eq!(e.status_code(), StatusCode::BadSecurityChecksFailed);
            // Not whole blocks.
            let mut short = chunk[..chunk.len() - 1].to_vec();
            let n = short.len() as u32;
            wire::patch_u32(&mut short, 4, n);
            let e = open_open(&short, Some(&server), DeprecatedPolicies::Reject).unwrap_err();
            assert_eq!(e.status_code(), StatusCode::BadSecurityChecksFailed);
        }
    }

    #[test]
    fn missing_or_garbage_sender_certificate_is_rejected() {
        let (_, client) = counting(2048, "client");
        let (_, server) = counting(2048, "server");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        let chunk =
            seal_open(SecurityPolicy::Basic256Sha256, Some(&client), Some(&server_cert), 0, seq(), b"x", 8192).unwrap();
        let none = with_security_header(&chunk, |h| h.sender_certificate = None);
        assert_eq!(
            open_open(&none, Some(&server), DeprecatedPolicies::Reject).unwrap_err().status_code(),
            StatusCode::BadCertificateInvalid
        );
        let junk = with_security_header(&chunk, |h| h.sender_certificate = Some(vec![0x30, 0x82, 0xff]));
        assert_eq!(
            open_open(&junk, Some(&server), DeprecatedPolicies::Reject).unwrap_err().status_code(),
            StatusCode::BadCertificateInvalid
        );
        let no_thumb = with_security_header(&chunk, |h| h.receiver_certificate_thumbprint = None);
        assert_eq!(
            open_open(&no_thumb, Some(&server), DeprecatedPolicies::Reject).unwrap_err().status_code(),
            StatusCode::BadCertificateInvalid
        );
        // A secured OPN at an endpoint without an identity.
        assert_eq!(
            open_open(&chunk, None, DeprecatedPolicies::Reject).unwrap_err().status_code(),
            StatusCode::BadSecurityPolicyRejected
        );
    }

    #[test]
    fn identity_must_match_its_key_and_leaf_parsing_handles_chains() {
        let (key, _) = cached(2048, "client");
        let (_, other_cert) = cached(2048, "server");
        assert_eq!(
            LocalIdentity::new(key.clone(), other_cert.clone()).unwrap_err().status_code(),
            StatusCode::BadCertificateInvalid
        );
        let (_, own_cert) = cached(2048, "client");
        let mut chain = own_cert.clone();
        chain.extend_from_slice(&other_cert);
        let id = LocalIdentity::new(key, chain.clone()).unwrap();
        assert_eq!(id.certificate(), own_cert.as_slice());
        assert_eq!(id.certificate_chain(), chain.as_slice());
        assert_eq!(id.thumbprint(), &thumbprint(&own_cert));
        for junk in
            [&[][..], &[0x31, 0x00], &[0x30, 0x85, 1, 1, 1, 1, 1], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[0x30, 0x80]]
        {
            assert!(leaf_certificate(junk).is_err());
        }
    }

    #[test]
    fn a_body_that_cannot_fit_one_chunk_is_refused() {
        let (_, client) = counting(2048, "client");
        let (_, server) = counting(2048, "server");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        let e =
            seal_open(SecurityPolicy::Basic256Sha256, Some(&client), Some(&server_cert), 0, seq(), &[0; 9000], 8192)
                .unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadEncodingLimitsExceeded);
        assert!(seal_open(SecurityPolicy::Basic256Sha256, Some(&client), None, 0, seq(), b"", 8192).is_err());
    }

    #[test]
    fn key_lengths_outside_the_policy_are_refused() {
        let (_, client) = counting(4096, "client");
        let (_, server) = counting(2048, "server");
        let server_cert = PeerCertificate::from_der(server.certificate()).unwrap();
        // Basic256 allows at most 2048 bits.
        let e =
            seal_open(SecurityPolicy::Basic256, Some(&client), Some(&server_cert), 0, seq(), b"", 8192).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadCertificatePolicyCheckFailed);
    }
}
