//! Shared setup of the fuzz targets and the seed generator: the test identities (made at run time by `make_seeds`
//! into the git-ignored `keys/`; no key material is committed), the channel configurations each target selects with its first input byte, and the
//! re-sealing of MSG chunks with the fixed token keys.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use certvault::soft::SoftKey;
use certvault::KeyPolicy;
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::keys::ChannelKeys;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::channel::secure_channel::Now;
use certvault_opcua::fuzzing::{self, Identities};
use opcua_types::DateTime;
use zeroize::Zeroizing;

/// Where the fixed test keys and certificates live (test fixtures, never used outside fuzzing).
pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys")
}

/// Loads one fixed identity: `keys/<name>.pk8` (PKCS#8 RSA-2048) and `keys/<name>.der` (its certificate).
pub fn load_identity(name: &str) -> LocalIdentity {
    let dir = keys_dir();
    let read = |ext: &str| {
        std::fs::read(dir.join(format!("{name}.{ext}")))
            .unwrap_or_else(|e| panic!("{}/{name}.{ext}: {e} (run the make_seeds binary first)", dir.display()))
    };
    let pkcs8 = Zeroizing::new(read("pk8"));
    let key = SoftKey::from_pkcs8(pkcs8, name.as_bytes().to_vec(), name.into(), true, KeyPolicy::default())
        .expect("fixed fuzzing key");
    LocalIdentity::new(Arc::new(key), read("der")).expect("fixed fuzzing identity")
}

/// The fixed server and client identities, loaded once per process.
pub fn identities() -> &'static Identities {
    static IDS: OnceLock<Identities> = OnceLock::new();
    IDS.get_or_init(|| Identities { server: load_identity("server"), client: load_identity("client") })
}

/// One clock reading per process, so every input sees the same time.
pub fn now() -> Now {
    static NOW: OnceLock<(Instant, DateTime)> = OnceLock::new();
    let (instant, utc) = *NOW.get_or_init(|| (Instant::now(), DateTime::now()));
    Now { instant, utc }
}

/// A reading `ms` milliseconds after [`now`].
pub fn later(ms: u64) -> Now {
    let n = now();
    Now { instant: n.instant + std::time::Duration::from_millis(ms), utc: n.utc }
}

/// The client configurations of the OPN targets, picked by the first input byte (modulo the length).
pub const OPN_CONFIGS: [(SecurityPolicy, SecurityMode); 5] = [
    (SecurityPolicy::None, SecurityMode::None),
    (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
    (SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt),
    (SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::Sign),
    (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
];

/// The channel configurations of the MSG target, picked by the low bits of the first input byte.
pub const MSG_CONFIGS: [(SecurityPolicy, SecurityMode); 4] = [
    (SecurityPolicy::None, SecurityMode::None),
    (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
    (SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::SignAndEncrypt),
    (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
];

/// In the MSG target's first byte: re-seal every frame with the client's token keys before the server sees it.
pub const RESEAL: u8 = 0x80;

/// The frame size every target's `FrameDecoder` allows (the default ReceiveBufferSize).
pub fn max_frame() -> u32 {
    fuzzing::limits().1.receive_buffer_size
}

/// Secures a plaintext MSG/CLO chunk the way the client's token-1 sealer of [`fuzzing::open_pair`] would, but
/// around whatever the fuzzer wrote: `template` is header (12 bytes) + TokenId (4) + the plaintext (sequence header,
/// body, padding and ExtraPadding bytes as the fuzzer chose them). MessageSize is fixed up, the HMAC appended,
/// and for SignAndEncrypt the plaintext is cut to whole AES blocks and encrypted. This lets the fuzzer reach the
/// checks behind the MAC (padding, sequence numbers, reassembly), which only a key holder can reach.
pub fn reseal(policy: SecurityPolicy, mode: SecurityMode, template: &[u8]) -> Vec<u8> {
    const START: usize = 16;
    let mut out = template.to_vec();
    if out.len() < START {
        return out;
    }
    let Some(sig) = policy.symmetric_signature() else {
        let n = out.len() as u32;
        out[4..8].copy_from_slice(&n.to_le_bytes());
        return out;
    };
    let keys = token_keys(policy);
    let mac_len = sig.len();
    let encrypt = mode == SecurityMode::SignAndEncrypt;
    if encrypt {
        // (plaintext + MAC) must be whole AES blocks.
        let region = out.len() - START + mac_len;
        out.truncate(out.len() - region % 16);
        if out.len() < START {
            return template.to_vec();
        }
    }
    let n = (out.len() + mac_len) as u32;
    out[4..8].copy_from_slice(&n.to_le_bytes());
    let alg = if mac_len == 32 { hmac::HMAC_SHA256 } else { hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY };
    let tag = hmac::sign(&hmac::Key::new(alg, keys.signing_key()), &out);
    out.extend_from_slice(tag.as_ref());
    if encrypt {
        let aes = if keys.encrypting_key().len() == 16 { &AES_128 } else { &AES_256 };
        let key = EncryptingKey::cbc(UnboundCipherKey::new(aes, keys.encrypting_key()).unwrap()).unwrap();
        let iv: [u8; 16] = keys.iv().try_into().unwrap();
        key.less_safe_encrypt(&mut out[START..], EncryptionContext::Iv128(FixedLength::from(iv))).unwrap();
    }
    out
}

fn token_keys(policy: SecurityPolicy) -> certvault_opcua::channel::keys::DerivedKeys {
    ChannelKeys::derive(policy, &fuzzing::client_nonce(policy), &fuzzing::server_nonce(policy)).unwrap().client
}
