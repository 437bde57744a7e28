//! The vaultd wire protocol, version 1 (documented in `docs/vaultd-protocol.md`).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of CBOR (RFC 8949). The client sends a
//! [`Request`], the daemon answers with exactly one [`Response`], in order, on the same connection. Frames larger
//! than [`MAX_FRAME`] are refused and the connection is closed, since its framing can no longer be trusted.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::audit::AuditRecord;
use crate::container::SecretBytes;
use crate::csr::CsrRequest;
use crate::error::{Result, VaultError};
use crate::key::{DecryptAlg, KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector, SignAlg};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// A request with the protocol version it is written in.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version; the daemon answers [`ErrorCode::Version`] to one it does not speak.
    pub v: u16,
    /// The operation.
    pub op: Op,
}

/// Operations. `container` names a container by serial; it may be left out when the daemon serves exactly one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// Which protocol and containers the daemon has. Needs no login.
    Hello,
    /// Logs this connection in to a container with the user PIN.
    Login {
        /// Serial.
        container: Option<String>,
        /// User PIN.
        pin: SecretBytes,
    },
    /// Lock state, attempts left, counter, number of keys. Needs no login.
    Status {
        /// Serial.
        container: Option<String>,
    },
    /// All keys.
    List {
        /// Serial.
        container: Option<String>,
    },
    /// One key's public facts.
    Info {
        /// Serial.
        container: Option<String>,
        /// Which key.
        key: KeySelector,
    },
    /// Makes a key inside.
    Generate {
        /// Serial.
        container: Option<String>,
        /// Label, unique in the container.
        label: String,
        /// Kind and size.
        algorithm: KeyAlgorithm,
        /// Policy.
        policy: KeyPolicy,
    },
    /// Moves a PKCS#8 key in (migration). There is no operation that moves one out.
    ImportPkcs8 {
        /// Serial.
        container: Option<String>,
        /// Label.
        label: String,
        /// The key.
        pkcs8: SecretBytes,
        /// Policy.
        policy: KeyPolicy,
    },
    /// Signs a message.
    Sign {
        /// Serial.
        container: Option<String>,
        /// Which key.
        key: KeySelector,
        /// Algorithm.
        alg: SignAlg,
        /// The whole message.
        msg: ByteBuf,
    },
    /// Decrypts one RSA block.
    Decrypt {
        /// Serial.
        container: Option<String>,
        /// Which key.
        key: KeySelector,
        /// Algorithm.
        alg: DecryptAlg,
        /// One block.
        ciphertext: ByteBuf,
    },
    /// Reads a key's certificate chain.
    ReadChain {
        /// Serial.
        container: Option<String>,
        /// Which key.
        key: KeySelector,
    },
    /// Stores a key's certificate chain, leaf first.
    StoreChain {
        /// Serial.
        container: Option<String>,
        /// Which key.
        key: KeySelector,
        /// DER certificates.
        chain: Vec<ByteBuf>,
    },
    /// Makes a PKCS#10 request inside the daemon.
    CreateCsr {
        /// Serial.
        container: Option<String>,
        /// Which key.
        key: KeySelector,
        /// Subject.
        request: CsrRequest,
    },
    /// Reads audit records.
    ReadAudit {
        /// Serial.
        container: Option<String>,
        /// First sequence number wanted.
        from: u64,
        /// At most this many.
        max: u32,
    },
    /// Changes the user PIN.
    ChangePin {
        /// Serial.
        container: Option<String>,
        /// Current PIN.
        old: SecretBytes,
        /// New PIN.
        new: SecretBytes,
    },
    /// Clears a lockout and sets a new user PIN with the admin PIN.
    Unlock {
        /// Serial.
        container: Option<String>,
        /// Admin PIN.
        admin_pin: SecretBytes,
        /// New user PIN.
        new_pin: SecretBytes,
    },
    /// Provisioning: makes the device identity key and the transport key inside, if missing (idempotent).
    DeviceInit {
        /// Serial.
        container: Option<String>,
    },
    /// Provisioning: the device's keys, counter, outstanding request and pinned central.
    DeviceInfo {
        /// Serial.
        container: Option<String>,
    },
    /// Provisioning: pins the central's certificate (admin PIN required: it decides whose updates are accepted).
    TrustCentral {
        /// Serial.
        container: Option<String>,
        /// Admin PIN.
        admin_pin: SecretBytes,
        /// DER certificate.
        cert: ByteBuf,
    },
    /// Provisioning: makes and remembers a fresh request nonce (replacing any outstanding one).
    BeginRequest {
        /// Serial.
        container: Option<String>,
    },
    /// Provisioning: verifies an update file and stores its keys and chains and the new counter in one write.
    ApplyUpdate {
        /// Serial.
        container: Option<String>,
        /// The update file (DER CMS).
        update: ByteBuf,
    },
    /// Makes a key inside the daemon, seals it to each recipient and keeps nothing (the central's key maker).
    GenerateSealed {
        /// Serial of the container whose login authorises the call.
        container: Option<String>,
        /// Kind and size.
        algorithm: KeyAlgorithm,
        /// DER SubjectPublicKeyInfo of each recipient (RSA).
        recipients: Vec<ByteBuf>,
        /// OAEP hash per recipient (missing entries: SHA-256).
        #[serde(default)]
        oaep: Vec<crate::provision::OaepHash>,
    },
    /// Opens a sealed key with an unwrap-only key inside the daemon and seals it to another recipient.
    Reseal {
        /// Serial.
        container: Option<String>,
        /// The unwrap-only key the sealed key is for (the central's backup key).
        key: KeySelector,
        /// The sealed key.
        sealed: ByteBuf,
        /// DER SubjectPublicKeyInfo of the new recipient.
        recipient: ByteBuf,
        /// Its OAEP hash.
        #[serde(default)]
        oaep: crate::provision::OaepHash,
    },
    /// Opens a private key sealed to this container's transport key (`certvault:transport`) inside the daemon and
    /// stores it under `label`, non-exportable (GDS UpdateCertificate with a "CertVaultSealed" key). Answers the
    /// new key's public facts.
    ImportSealed {
        /// Serial.
        container: Option<String>,
        /// Label of the new key (not reserved, unique).
        label: String,
        /// The sealed key (DER CMS EnvelopedData, see `docs/provisioning.md`).
        sealed: ByteBuf,
        /// The certificate (DER) the key must belong to; a key that does not match it is refused and not stored.
        #[serde(default)]
        certificate: Option<ByteBuf>,
    },
}

/// Answer to `DeviceInit` and `DeviceInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Serial.
    pub serial: String,
    /// Update counter.
    pub counter: u64,
    /// The device identity key (`certvault:device`), once made.
    pub device_key: Option<KeyInfo>,
    /// The transport key (`certvault:transport`), once made.
    pub transport_key: Option<KeyInfo>,
    /// A request is outstanding (its nonce is remembered).
    pub pending_request: bool,
    /// The pinned central certificate (DER).
    pub central_cert: Option<ByteBuf>,
}

/// Answer to `BeginRequest`: what a request file needs from the vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    /// Serial.
    pub serial: String,
    /// The update counter now.
    pub counter: u64,
    /// The fresh nonce, now remembered as outstanding.
    pub nonce: ByteBuf,
    /// DER SubjectPublicKeyInfo of the device key.
    pub device_key: ByteBuf,
    /// DER SubjectPublicKeyInfo of the transport key.
    pub transport_key: ByteBuf,
    /// The OAEP hash the transport key unwraps with (a fronted PKCS#11 token may need SHA-1).
    #[serde(default, skip_serializing_if = "crate::provision::OaepHash::is_default")]
    pub transport_oaep: crate::provision::OaepHash,
}

/// Answer to `ApplyUpdate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Serial.
    pub serial: String,
    /// The counter now.
    pub counter: u64,
    /// The nonce the update answered.
    pub nonce: ByteBuf,
    /// Stored certificates.
    pub certificates: Vec<crate::provision::Thumbprint>,
    /// Labels of keys that came sealed from the central and are now inside.
    pub imported_keys: Vec<String>,
}

/// One container as `Hello` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    /// Serial.
    pub serial: String,
    /// Backend: "container" (emulated dongle) or "pkcs11".
    pub backend: String,
}

/// Answer to `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Serial.
    pub serial: String,
    /// Locked after too many wrong PINs.
    pub locked: bool,
    /// Attempts left before lockout.
    pub attempts_left: u32,
    /// This connection is logged in.
    pub logged_in: bool,
    /// Update counter (known only once someone logged in since the daemon started).
    pub update_counter: Option<u64>,
    /// Number of keys (likewise).
    pub keys: Option<u32>,
    /// Audit records so far.
    pub audit_records: u64,
}

/// Error classes on the wire, so clients can rebuild a typed [`VaultError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Unknown protocol version.
    Version,
    /// No such key or container.
    NotFound,
    /// Duplicate label.
    Duplicate,
    /// Algorithm not possible for the key.
    Unsupported,
    /// Bad input.
    InvalidInput,
    /// Decryption failed.
    DecryptFailed,
    /// Wrong PIN.
    WrongPin,
    /// Locked.
    PinLocked,
    /// Not logged in.
    NotLoggedIn,
    /// Not allowed for this uid.
    AccessDenied,
    /// Anything else (storage, crypto library).
    Internal,
}

/// The daemon's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// Protocol version.
        protocol: u16,
        /// Daemon build.
        daemon: String,
        /// Served containers.
        containers: Vec<ContainerSummary>,
    },
    /// Success without data.
    Ok,
    /// Status.
    Status(StatusInfo),
    /// Keys.
    Keys(Vec<KeyInfo>),
    /// One key.
    Key(KeyInfo),
    /// A signature.
    Signature(ByteBuf),
    /// A plaintext.
    Plaintext(SecretBytes),
    /// A chain.
    Chain(Vec<ByteBuf>),
    /// A CSR.
    Csr(ByteBuf),
    /// Audit records.
    Audit(Vec<AuditRecord>),
    /// Device state.
    Device(DeviceState),
    /// A request context.
    RequestContext(RequestContext),
    /// An applied update.
    Applied(ApplyReport),
    /// A key made and sealed.
    Sealed(crate::provision::SealedKeys),
    /// A re-sealed key.
    Resealed(ByteBuf),
    /// Failure.
    Error {
        /// Class.
        code: ErrorCode,
        /// Message for humans.
        message: String,
        /// With `WrongPin`.
        attempts_left: Option<u32>,
    },
}

impl Response {
    /// The response for an error.
    pub fn from_error(e: &VaultError) -> Response {
        let (code, attempts_left) = match e {
            VaultError::KeyNotFound(_) => (ErrorCode::NotFound, None),
            VaultError::DuplicateLabel(_) => (ErrorCode::Duplicate, None),
            VaultError::Unsupported { .. } => (ErrorCode::Unsupported, None),
            VaultError::InvalidInput(_) => (ErrorCode::InvalidInput, None),
            VaultError::DecryptFailed => (ErrorCode::DecryptFailed, None),
            VaultError::WrongPin { attempts_left } => (ErrorCode::WrongPin, Some(*attempts_left)),
            VaultError::PinLocked => (ErrorCode::PinLocked, None),
            VaultError::NotLoggedIn => (ErrorCode::NotLoggedIn, None),
            VaultError::AccessDenied(_) => (ErrorCode::AccessDenied, None),
            VaultError::Protocol(_) => (ErrorCode::Version, None),
            _ => (ErrorCode::Internal, None),
        };
        // Send the inner sentence, not the Display, so the client's rebuilt error reads the same as a local one.
        let message = match e {
            VaultError::KeyNotFound(m)
            | VaultError::DuplicateLabel(m)
            | VaultError::InvalidInput(m)
            | VaultError::AccessDenied(m)
            | VaultError::Protocol(m)
            | VaultError::Daemon(m) => m.clone(),
            other => other.to_string(),
        };
        Response::Error { code, message, attempts_left }
    }

    /// Rebuilds the typed error of an `Error` response.
    pub fn into_error(code: ErrorCode, message: String, attempts_left: Option<u32>) -> VaultError {
        match code {
            ErrorCode::NotFound => VaultError::KeyNotFound(message),
            ErrorCode::Duplicate => VaultError::DuplicateLabel(message),
            ErrorCode::Unsupported => VaultError::Unsupported { key: String::new(), alg: String::new(), why: message },
            ErrorCode::InvalidInput => VaultError::InvalidInput(message),
            ErrorCode::DecryptFailed => VaultError::DecryptFailed,
            ErrorCode::WrongPin => VaultError::WrongPin { attempts_left: attempts_left.unwrap_or(0) },
            ErrorCode::PinLocked => VaultError::PinLocked,
            ErrorCode::NotLoggedIn => VaultError::NotLoggedIn,
            ErrorCode::AccessDenied => VaultError::AccessDenied(message),
            ErrorCode::Version => VaultError::Protocol(message),
            ErrorCode::Internal => VaultError::Daemon(message),
        }
    }
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<()> {
    let mut buf = vec![0u8; 4];
    ciborium::into_writer(msg, &mut buf).map_err(|e| VaultError::Protocol(format!("encoding: {e}")))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(VaultError::InvalidInput(format!(
            "message of {len} bytes exceeds the {MAX_FRAME}-byte frame limit"
        )));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(&buf).map_err(|e| VaultError::io("writing to vaultd socket", e))
}

/// Reads one frame's bytes. `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame_bytes(r: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(VaultError::io("reading from vaultd socket", e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(VaultError::Protocol(format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| VaultError::io("reading from vaultd socket", e))?;
    Ok(Some(buf))
}

/// Decodes a frame's bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    ciborium::from_reader(bytes).map_err(|e| VaultError::Protocol(format!("malformed message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn frames_round_trip_and_limits_hold() -> TestResult {
        let req = Request {
            v: PROTOCOL_VERSION,
            op: Op::Sign {
                container: None,
                key: KeySelector::Label("k".into()),
                alg: SignAlg::RsaPssSha256,
                msg: ByteBuf::from(vec![1, 2, 3]),
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req)?;
        let bytes = read_frame_bytes(&mut buf.as_slice())?.ok_or("no frame")?;
        let back: Request = decode(&bytes)?;
        assert!(matches!(back.op, Op::Sign { alg: SignAlg::RsaPssSha256, .. }));

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(read_frame_bytes(&mut &huge[..]).is_err());
        assert!(read_frame_bytes(&mut &[0u8, 0, 0, 9, 1][..]).is_err(), "truncated frame");
        assert!(read_frame_bytes(&mut &[][..])?.is_none());
        assert!(decode::<Request>(&[0xff, 0x00, 0x13]).is_err());
        Ok(())
    }
}
