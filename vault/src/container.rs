//! The emulated dongle: one sealed container file holding keys, certificate chains, a serial number and an update
//! counter.
//!
//! # File format (version 1)
//! ```text
//! magic "CVAULT\r\n" (8 bytes) | format version u16 BE | header length u32 BE | header (CBOR) | body ciphertext
//! ```
//! The body (CBOR [`Body`]) is sealed with AES-256-GCM under a random data key (DEK), with the magic, version and
//! header as associated data, so nothing in the header can be changed without the body failing to open. The DEK is
//! wrapped twice, under keys derived with Argon2id from the user PIN and from the admin PIN ([`Slot`]), so the
//! admin PIN can reset a forgotten or locked user PIN without the keys ever being re-encrypted under a weaker secret.
//!
//! Every write goes to a temporary file in the same directory, is fsynced, renamed over the old file and the
//! directory fsynced: a kill at any moment leaves the old or the new container, never a mix.
//!
//! The failed-PIN counter lives beside the container (`<file>.pin`), because it must be written when the PIN is
//! wrong, that is, when the container cannot be opened.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Result, VaultError};
use crate::key::KeyPolicy;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"CVAULT\r\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Largest container accepted, a guard against reading a wrong, huge file into memory.
pub const MAX_CONTAINER_BYTES: u64 = 64 << 20;

/// Argon2id cost parameters, stored in the header so they can be raised later without breaking old containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id recommendation (19 MiB, 2 passes): about 50 ms here, per login, not per operation.
    fn default() -> Self {
        KdfParams { m_kib: 19 * 1024, t: 2, p: 1 }
    }
}

/// The DEK wrapped under one PIN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slot {
    #[serde(with = "serde_bytes")]
    salt: Vec<u8>,
    #[serde(with = "serde_bytes")]
    nonce: Vec<u8>,
    #[serde(with = "serde_bytes")]
    wrapped_dek: Vec<u8>,
}

/// The clear header: enough to name the dongle and to try a PIN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// The dongle's serial number (public, like the one printed on a real dongle).
    pub serial: String,
    /// Argon2id parameters for both slots.
    pub kdf: KdfParams,
    /// Wrong user PINs in a row before the container locks.
    pub max_pin_attempts: u32,
    user: Slot,
    admin: Slot,
    #[serde(with = "serde_bytes")]
    body_nonce: Vec<u8>,
}

/// Private key bytes that are wiped when dropped. Only the container and the daemon's key table ever hold them.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretBytes(#[serde(with = "serde_bytes")] Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
    /// The bytes, copied into a zeroizing buffer.
    pub fn to_zeroizing(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.clone())
    }
    /// Borrows the bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// One key in the container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredKey {
    /// Random 16-byte id.
    #[serde(with = "serde_bytes")]
    pub id: Vec<u8>,
    /// Unique label.
    pub label: String,
    /// PKCS#8 DER of the private key.
    pub pkcs8: SecretBytes,
    /// Generated inside (false: imported).
    pub made_inside: bool,
    /// Policy.
    pub policy: KeyPolicy,
    /// Certificate chain, leaf first.
    pub chain: Vec<serde_bytes::ByteBuf>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

/// The sealed part of the container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Body {
    /// Serial again, so a body cannot be moved under another header.
    pub serial: String,
    /// Advanced by every applied update (certificate management).
    pub update_counter: u64,
    /// Keys.
    pub keys: Vec<StoredKey>,
    /// Nonce of the outstanding provisioning request, until an update answering it is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_nonce: Option<serde_bytes::ByteBuf>,
    /// The pinned certificate (DER) of the certificate management central whose updates this dongle accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_cert: Option<serde_bytes::ByteBuf>,
}

/// An opened container: header, data key and the decrypted body.
pub struct Container {
    path: PathBuf,
    header: Header,
    dek: Zeroizing<[u8; 32]>,
    /// The decrypted content. Callers change it and then [`Container::save`].
    pub body: Body,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("path", &self.path)
            .field("serial", &self.header.serial)
            .field("keys", &self.body.keys.len())
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, why: impl Into<String>) -> VaultError {
    VaultError::Container { path: path.to_path_buf(), why: why.into() }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| VaultError::Crypto("no randomness".into()))?;
    Ok(b)
}

fn derive_kek(pin: &[u8], salt: &[u8], kdf: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| VaultError::InvalidInput(format!("Argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(pin, salt, out.as_mut()).map_err(|e| VaultError::Crypto(format!("Argon2id: {e}")))?;
    Ok(out)
}

fn seal(key: &[u8; 32], nonce: &[u8], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| VaultError::Crypto("AES key".into()))?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Crypto("nonce".into()))?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| VaultError::Crypto("AES-GCM seal".into()))?;
    Ok(buf)
}

fn open_sealed(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let n = key.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(n);
    Some(buf)
}

fn slot_aad(serial: &str, which: &str) -> Vec<u8> {
    format!("certvault-dek-{which}:{serial}").into_bytes()
}

fn make_slot(dek: &[u8; 32], pin: &[u8], serial: &str, which: &str, kdf: KdfParams) -> Result<Slot> {
    let salt = random::<16>()?;
    let nonce = random::<12>()?;
    let kek = derive_kek(pin, &salt, kdf)?;
    Ok(Slot {
        salt: salt.to_vec(),
        nonce: nonce.to_vec(),
        wrapped_dek: seal(&kek, &nonce, &slot_aad(serial, which), dek)?,
    })
}

/// Which PIN opens the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinRole {
    /// The user PIN, for everyday key use.
    User,
    /// The admin (SO) PIN, for unlocking and resetting the user PIN.
    Admin,
}

/// Reads and checks the clear part of a container file: magic, version, header. Needs no PIN.
pub fn read_header(path: &Path) -> Result<(Header, Vec<u8>)> {
    let meta = fs::metadata(path).map_err(|e| VaultError::io(format!("container {}", path.display()), e))?;
    if meta.len() > MAX_CONTAINER_BYTES {
        return Err(bad(path, format!("{} bytes is larger than any container", meta.len())));
    }
    let bytes = fs::read(path).map_err(|e| VaultError::io(format!("reading container {}", path.display()), e))?;
    let header = parse_header(path, &bytes)?;
    Ok((header, bytes))
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 14 || &bytes[..8] != MAGIC {
        return Err(bad(path, "not a certvault container (bad magic); was it truncated or overwritten?"));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(bad(
            path,
            format!(
                "container format version {version} is not supported by this build (it reads version {FORMAT_VERSION})"
            ),
        ));
    }
    let hlen = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    let header_bytes = bytes.get(14..14usize.saturating_add(hlen)).ok_or_else(|| bad(path, "truncated header"))?;
    let header: Header = ciborium::from_reader(header_bytes).map_err(|e| bad(path, format!("corrupt header: {e}")))?;
    if header.body_nonce.len() != 12 || header.user.nonce.len() != 12 || header.admin.nonce.len() != 12 {
        return Err(bad(path, "corrupt header: bad nonce length"));
    }
    Ok(header)
}

impl Container {
    /// Creates a new, empty container. Refuses to overwrite an existing file.
    pub fn create(
        path: &Path,
        serial: &str,
        user_pin: &[u8],
        admin_pin: &[u8],
        kdf: KdfParams,
        max_pin_attempts: u32,
    ) -> Result<Container> {
        check_pin(user_pin)?;
        check_pin(admin_pin)?;
        if serial.is_empty() || serial.len() > 64 || !serial.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(VaultError::InvalidInput("a serial is 1 to 64 characters of letters, digits and '-'".into()));
        }
        if path.exists() {
            return Err(bad(path, "already exists; refusing to overwrite a container"));
        }
        let dek = Zeroizing::new(random::<32>()?);
        let header = Header {
            serial: serial.to_string(),
            kdf,
            max_pin_attempts: max_pin_attempts.max(1),
            user: make_slot(&dek, user_pin, serial, "user", kdf)?,
            admin: make_slot(&dek, admin_pin, serial, "admin", kdf)?,
            body_nonce: random::<12>()?.to_vec(),
        };
        let mut c = Container {
            path: path.to_path_buf(),
            header,
            dek,
            body: Body {
                serial: serial.to_string(),
                update_counter: 0,
                keys: Vec::new(),
                pending_nonce: None,
                central_cert: None,
            },
        };
        c.save()?;
        Ok(c)
    }

    /// Opens a container with a PIN. A wrong PIN gives `Ok(None)`; lockout bookkeeping is the caller's
    /// ([`PinCounter`]), so this function stays a pure check.
    pub fn open(path: &Path, pin: &[u8], role: PinRole) -> Result<Option<Container>> {
        let (header, bytes) = read_header(path)?;
        let (slot, which) = match role {
            PinRole::User => (&header.user, "user"),
            PinRole::Admin => (&header.admin, "admin"),
        };
        let kek = derive_kek(pin, &slot.salt, header.kdf)?;
        let Some(dek_bytes) = open_sealed(&kek, &slot.nonce, &slot_aad(&header.serial, which), &slot.wrapped_dek)
        else {
            return Ok(None);
        };
        let dek: [u8; 32] = dek_bytes.as_slice().try_into().map_err(|_| bad(path, "corrupt key slot"))?;
        let dek = Zeroizing::new(dek);
        let hlen = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
        let (aad, sealed) = bytes.split_at(14 + hlen);
        let plain = open_sealed(&dek, &header.body_nonce, aad, sealed)
            .ok_or_else(|| bad(path, "the body does not authenticate: the file is corrupted or was tampered with"))?;
        let body: Body =
            ciborium::from_reader(plain.as_slice()).map_err(|e| bad(path, format!("corrupt body: {e}")))?;
        if body.serial != header.serial {
            return Err(bad(path, "the body belongs to another serial"));
        }
        Ok(Some(Container { path: path.to_path_buf(), header, dek, body }))
    }

    /// The dongle's serial.
    pub fn serial(&self) -> &str {
        &self.header.serial
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Where the container lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets a new user PIN (after an admin unlock or a PIN change).
    pub fn set_user_pin(&mut self, pin: &[u8]) -> Result<()> {
        check_pin(pin)?;
        self.header.user = make_slot(&self.dek, pin, &self.header.serial, "user", self.header.kdf)?;
        Ok(())
    }

    /// Seals the body with a fresh nonce and replaces the file atomically.
    pub fn save(&mut self) -> Result<()> {
        self.header.body_nonce = random::<12>()?.to_vec();
        let mut header_bytes = Vec::new();
        ciborium::into_writer(&self.header, &mut header_bytes)
            .map_err(|e| VaultError::Crypto(format!("encoding header: {e}")))?;
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&header_bytes);
        let mut plain = Zeroizing::new(Vec::new());
        ciborium::into_writer(&self.body, &mut *plain)
            .map_err(|e| VaultError::Crypto(format!("encoding body: {e}")))?;
        let sealed = seal(&self.dek, &self.header.body_nonce, &out, &plain)?;
        out.extend_from_slice(&sealed);
        atomic_write(&self.path, &out)
    }
}

fn check_pin(pin: &[u8]) -> Result<()> {
    if pin.len() < 4 || pin.len() > 256 {
        return Err(VaultError::InvalidInput("a PIN is 4 to 256 bytes".into()));
    }
    Ok(())
}

/// Writes `data` to `path` so that a crash leaves either the old or the new file: temp file, fsync, rename, fsync
/// of the directory. The file is created with mode 0600.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| VaultError::io(ctx("creating"), e))?;
    f.write_all(data).map_err(|e| VaultError::io(ctx("writing"), e))?;
    f.sync_all().map_err(|e| VaultError::io(ctx("syncing"), e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        VaultError::io(format!("replacing {}", path.display()), e)
    })?;
    if let Ok(d) = File::open(dir) {
        // A failed directory fsync cannot undo the rename; the next write will sync again.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Takes the exclusive lock that marks a container as served. Held for as long as the returned file lives.
pub fn lock(path: &Path) -> Result<File> {
    let lock_path = sidecar(path, "lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| VaultError::io(format!("opening lock file {}", lock_path.display()), e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(VaultError::ContainerBusy(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(VaultError::io(format!("locking {}", lock_path.display()), e)),
    }
}

/// `<container>.<ext>`: the lock, PIN counter and audit log live beside the container.
pub fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The failed-PIN counter, persisted beside the container so lockout survives a restart.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinCounter {
    /// Wrong user PINs in a row.
    pub failures: u32,
}

impl PinCounter {
    /// Loads the counter. A missing file means no failures; an unreadable one counts as locked, because a counter
    /// that an attacker can corrupt must not reset itself.
    pub fn load(container: &Path, max: u32) -> PinCounter {
        let p = sidecar(container, "pin");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(PinCounter { failures: max }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PinCounter::default(),
            Err(_) => PinCounter { failures: max },
        }
    }

    /// Persists the counter atomically.
    pub fn store(&self, container: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| VaultError::Crypto(e.to_string()))?;
        atomic_write(&sidecar(container, "pin"), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const FAST: KdfParams = KdfParams { m_kib: 64, t: 1, p: 1 };

    #[test]
    fn create_open_save_round_trip() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("d.cvault");
        let mut c = Container::create(&path, "CV-1", b"1234", b"admin-pin", FAST, 3)?;
        c.body.update_counter = 7;
        c.save()?;
        assert!(Container::open(&path, b"9999", PinRole::User)?.is_none());
        let c = Container::open(&path, b"1234", PinRole::User)?.ok_or("wrong PIN")?;
        assert_eq!(c.body.update_counter, 7);
        let mut a = Container::open(&path, b"admin-pin", PinRole::Admin)?.ok_or("wrong admin PIN")?;
        a.set_user_pin(b"5678")?;
        a.save()?;
        assert!(Container::open(&path, b"1234", PinRole::User)?.is_none());
        assert!(Container::open(&path, b"5678", PinRole::User)?.is_some());
        assert!(Container::create(&path, "CV-1", b"1234", b"admin", FAST, 3).is_err());
        Ok(())
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("d.cvault");
        Container::create(&path, "CV-2", b"1234", b"admin-pin", FAST, 3)?;
        let good = fs::read(&path)?;
        let step = (good.len() / 40).max(1);
        for i in (0..good.len()).step_by(step) {
            let mut b = good.clone();
            b[i] ^= 0x40;
            fs::write(&path, &b)?;
            // Either an error or "wrong PIN" (a flipped slot), never an opened container.
            assert!(!matches!(Container::open(&path, b"1234", PinRole::User), Ok(Some(_))), "byte {i}");
        }
        for len in [0, 5, 13, 40, good.len() - 1] {
            fs::write(&path, &good[..len])?;
            assert!(Container::open(&path, b"1234", PinRole::User).is_err(), "length {len}");
        }
        let mut b = good.clone();
        b[9] = 9;
        fs::write(&path, &b)?;
        let err = Container::open(&path, b"1234", PinRole::User).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        Ok(())
    }

    #[test]
    fn second_lock_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("d.cvault");
        let _held = lock(&path)?;
        assert!(matches!(lock(&path), Err(VaultError::ContainerBusy(_))));
        Ok(())
    }
}
