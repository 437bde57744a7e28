//! The application side of vaultd: [`DaemonClient`] (a [`KeyStore`]) and [`DaemonKey`] (a [`VaultKey`] handle).
//!
//! The client holds no key bytes, only the socket path, the PIN it logs in with, and public key information. It
//! keeps a small pool of connections so that concurrent callers do not queue behind one another.

use std::fmt;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use crate::audit::AuditRecord;
use crate::container::SecretBytes;
use crate::csr::CsrRequest;
use crate::error::{Result, VaultError};
use crate::key::{DecryptAlg, KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector, SharedKey, SignAlg, VaultKey};
use crate::protocol::{
    self, ApplyReport, ContainerSummary, DeviceState, Op, RequestContext, Response, StatusInfo, PROTOCOL_VERSION,
};
use crate::provision::{KeyMaker, Recipient, SealedKeys};
use crate::store::KeyStore;

mod import_sealed;

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    logged_in: bool,
}

struct Inner {
    socket: PathBuf,
    container: Option<String>,
    pin: Mutex<Option<Zeroizing<Vec<u8>>>>,
    pool: Mutex<Vec<Conn>>,
}

/// A connection to vaultd for one container.
///
/// ```no_run
/// use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeyStore};
/// # fn main() -> Result<(), certvault::VaultError> {
/// let vault = DaemonClient::connect("/run/certvault/vaultd.sock", Some("CV-0001".into()))?;
/// vault.login(b"123456")?;
/// let info = vault.generate("opcua-server", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default())?;
/// println!("made {} inside the vault", info.label);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DaemonClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonClient")
            .field("socket", &self.inner.socket)
            .field("container", &self.inner.container)
            .finish_non_exhaustive()
    }
}

/// Connections kept open for reuse; more may exist while many threads sign at once.
const POOL_KEEP: usize = 16;

impl DaemonClient {
    /// Connects to the daemon at `socket` for the container with serial `container` (`None` when the daemon serves
    /// only one). Fails at once, with the socket named, when no daemon listens there.
    pub fn connect(socket: impl AsRef<Path>, container: Option<String>) -> Result<Self> {
        let client = DaemonClient {
            inner: Arc::new(Inner {
                socket: socket.as_ref().to_path_buf(),
                container,
                pin: Mutex::new(None),
                pool: Mutex::new(Vec::new()),
            }),
        };
        match client.call(Op::Hello)? {
            Response::Hello { protocol, .. } if protocol == PROTOCOL_VERSION => Ok(client),
            Response::Hello { protocol, .. } => {
                Err(VaultError::Protocol(format!("vaultd speaks protocol {protocol}, this client {PROTOCOL_VERSION}")))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Logs in with the user PIN. The PIN is kept (zeroized on drop) to log in further pooled connections.
    pub fn login(&self, pin: &[u8]) -> Result<()> {
        let mut conn = self.take()?;
        let r = roundtrip(
            &mut conn,
            &Op::Login { container: self.inner.container.clone(), pin: SecretBytes::new(pin.to_vec()) },
        );
        match r {
            Ok(Response::Ok) => {
                conn.logged_in = true;
                *self.inner.pin.lock().map_err(poison)? = Some(Zeroizing::new(pin.to_vec()));
                // Older connections logged in under another PIN, or none: drop them.
                self.inner.pool.lock().map_err(poison)?.clear();
                self.give_back(conn);
                Ok(())
            }
            Ok(other) => Err(into_err(other)),
            Err(e) => Err(e),
        }
    }

    /// Names of the daemon and its containers.
    pub fn hello(&self) -> Result<(String, Vec<ContainerSummary>)> {
        match self.call(Op::Hello)? {
            Response::Hello { daemon, containers, .. } => Ok((daemon, containers)),
            other => Err(unexpected(other)),
        }
    }

    /// Lock state and counters of the container.
    pub fn status(&self) -> Result<StatusInfo> {
        match self.call(Op::Status { container: self.inner.container.clone() })? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Audit records from sequence number `from` on.
    pub fn audit(&self, from: u64, max: u32) -> Result<Vec<AuditRecord>> {
        match self.call(Op::ReadAudit { container: self.inner.container.clone(), from, max })? {
            Response::Audit(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Changes the user PIN.
    pub fn change_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        self.expect_ok(Op::ChangePin {
            container: self.inner.container.clone(),
            old: SecretBytes::new(old.to_vec()),
            new: SecretBytes::new(new.to_vec()),
        })?;
        *self.inner.pin.lock().map_err(poison)? = Some(Zeroizing::new(new.to_vec()));
        Ok(())
    }

    /// Clears a PIN lockout with the admin PIN and sets a new user PIN.
    pub fn unlock(&self, admin_pin: &[u8], new_pin: &[u8]) -> Result<()> {
        self.expect_ok(Op::Unlock {
            container: self.inner.container.clone(),
            admin_pin: SecretBytes::new(admin_pin.to_vec()),
            new_pin: SecretBytes::new(new_pin.to_vec()),
        })
    }

    fn expect_ok(&self, op: Op) -> Result<()> {
        match self.call(op)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn open_conn(&self) -> Result<Conn> {
        let stream = UnixStream::connect(&self.inner.socket)
            .map_err(|err| VaultError::DaemonUnavailable { socket: self.inner.socket.clone(), err })?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| VaultError::io("cloning the vaultd socket", e))?);
        Ok(Conn { reader, writer: stream, logged_in: false })
    }

    fn take(&self) -> Result<Conn> {
        let pooled = self.inner.pool.lock().map_err(poison)?.pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.open_conn(),
        }
    }

    fn give_back(&self, conn: Conn) {
        if let Ok(mut pool) = self.inner.pool.lock() {
            if pool.len() < POOL_KEEP {
                pool.push(conn);
            }
        }
    }

    /// Sends `op` on a pooled connection, logging it in first when a PIN is known. A connection that failed at
    /// the transport level is dropped, and the call retried once on a fresh one (the daemon may have restarted).
    fn call(&self, op: Op) -> Result<Response> {
        for attempt in 0..2 {
            let mut conn = self.take()?;
            if !conn.logged_in && !matches!(op, Op::Hello | Op::Login { .. } | Op::Status { .. }) {
                let pin = self.inner.pin.lock().map_err(poison)?.clone();
                if let Some(pin) = pin {
                    let login =
                        Op::Login { container: self.inner.container.clone(), pin: SecretBytes::new(pin.to_vec()) };
                    match roundtrip(&mut conn, &login) {
                        Ok(Response::Ok) => conn.logged_in = true,
                        Ok(other) => return Err(into_err(other)),
                        Err(e) if attempt == 0 && is_transport(&e) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            match roundtrip(&mut conn, &op) {
                Ok(r) => {
                    self.give_back(conn);
                    return Ok(r);
                }
                Err(e) if attempt == 0 && is_transport(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(VaultError::Protocol("vaultd closed the connection twice".into()))
    }

    fn key_op(&self, op: Op) -> Result<Response> {
        match self.call(op)? {
            Response::Error { code, message, attempts_left } => Err(Response::into_error(code, message, attempts_left)),
            r => Ok(r),
        }
    }
}

fn is_transport(e: &VaultError) -> bool {
    matches!(e, VaultError::Io { .. })
}

fn poison<T>(_: T) -> VaultError {
    VaultError::Crypto("client lock poisoned".into())
}

fn into_err(r: Response) -> VaultError {
    match r {
        Response::Error { code, message, attempts_left } => Response::into_error(code, message, attempts_left),
        other => VaultError::Protocol(format!("unexpected answer from vaultd: {other:?}")),
    }
}

fn unexpected(r: Response) -> VaultError {
    into_err(r)
}

fn roundtrip(conn: &mut Conn, op: &Op) -> Result<Response> {
    // Same wire form as `protocol::Request`, but borrowing the op so a retry needs no clone.
    let req = RequestRef { v: PROTOCOL_VERSION, op };
    protocol::write_frame(&mut conn.writer, &req)?;
    conn.writer.flush().map_err(|e| VaultError::io("writing to vaultd socket", e))?;
    match protocol::read_frame_bytes(&mut conn.reader)? {
        Some(bytes) => protocol::decode(&bytes),
        None => Err(VaultError::io(
            "reading from vaultd socket",
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "vaultd closed the connection"),
        )),
    }
}

#[derive(serde::Serialize)]
struct RequestRef<'a> {
    v: u16,
    op: &'a Op,
}

impl KeyStore for DaemonClient {
    fn list(&self) -> Result<Vec<KeyInfo>> {
        match self.key_op(Op::List { container: self.inner.container.clone() })? {
            Response::Keys(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    fn key(&self, selector: &KeySelector) -> Result<SharedKey> {
        match self.key_op(Op::Info { container: self.inner.container.clone(), key: selector.clone() })? {
            Response::Key(info) => {
                Ok(Arc::new(DaemonKey { client: self.clone(), selector: KeySelector::Id(info.id.clone()), info }))
            }
            other => Err(unexpected(other)),
        }
    }

    fn generate(&self, label: &str, algorithm: KeyAlgorithm, policy: KeyPolicy) -> Result<KeyInfo> {
        match self.key_op(Op::Generate {
            container: self.inner.container.clone(),
            label: label.to_string(),
            algorithm,
            policy,
        })? {
            Response::Key(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    fn import_pkcs8(&self, label: &str, pkcs8: Zeroizing<Vec<u8>>, policy: KeyPolicy) -> Result<KeyInfo> {
        match self.key_op(Op::ImportPkcs8 {
            container: self.inner.container.clone(),
            label: label.to_string(),
            pkcs8: SecretBytes::new(pkcs8.to_vec()),
            policy,
        })? {
            Response::Key(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    fn cert_chain(&self, selector: &KeySelector) -> Result<Vec<Vec<u8>>> {
        match self.key_op(Op::ReadChain { container: self.inner.container.clone(), key: selector.clone() })? {
            Response::Chain(c) => Ok(c.into_iter().map(ByteBuf::into_vec).collect()),
            other => Err(unexpected(other)),
        }
    }

    fn store_cert_chain(&self, selector: &KeySelector, chain: Vec<Vec<u8>>) -> Result<()> {
        match self.key_op(Op::StoreChain {
            container: self.inner.container.clone(),
            key: selector.clone(),
            chain: chain.into_iter().map(ByteBuf::from).collect(),
        })? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn create_csr(&self, selector: &KeySelector, request: &CsrRequest) -> Result<Vec<u8>> {
        match self.key_op(Op::CreateCsr {
            container: self.inner.container.clone(),
            key: selector.clone(),
            request: request.clone(),
        })? {
            Response::Csr(c) => Ok(c.into_vec()),
            other => Err(unexpected(other)),
        }
    }
}

/// Provisioning (device side; see `docs/provisioning.md`).
impl DaemonClient {
    /// Makes the device identity key and the transport key inside the container, if missing.
    pub fn device_init(&self) -> Result<DeviceState> {
        match self.key_op(Op::DeviceInit { container: self.inner.container.clone() })? {
            Response::Device(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// The device's keys, counter, outstanding request and pinned central.
    pub fn device_info(&self) -> Result<DeviceState> {
        match self.key_op(Op::DeviceInfo { container: self.inner.container.clone() })? {
            Response::Device(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// Pins the central's certificate (DER); needs the admin PIN.
    pub fn trust_central(&self, admin_pin: &[u8], cert: &[u8]) -> Result<()> {
        match self.key_op(Op::TrustCentral {
            container: self.inner.container.clone(),
            admin_pin: SecretBytes::new(admin_pin.to_vec()),
            cert: ByteBuf::from(cert.to_vec()),
        })? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Makes a fresh request nonce, remembered in the container as outstanding.
    pub fn begin_request(&self) -> Result<RequestContext> {
        match self.key_op(Op::BeginRequest { container: self.inner.container.clone() })? {
            Response::RequestContext(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Has the daemon verify and apply an update file (one atomic container write).
    pub fn apply_update(&self, update: &[u8]) -> Result<ApplyReport> {
        match self.key_op(Op::ApplyUpdate {
            container: self.inner.container.clone(),
            update: ByteBuf::from(update.to_vec()),
        })? {
            Response::Applied(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

impl KeyMaker for DaemonClient {
    fn generate_sealed_to(&self, algorithm: KeyAlgorithm, recipients: &[Recipient]) -> Result<SealedKeys> {
        match self.key_op(Op::GenerateSealed {
            container: self.inner.container.clone(),
            algorithm,
            recipients: recipients.iter().map(|r| ByteBuf::from(r.spki.clone())).collect(),
            oaep: recipients.iter().map(|r| r.oaep).collect(),
        })? {
            Response::Sealed(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    fn reseal_to(&self, backup_key: &KeySelector, sealed: &[u8], recipient: &Recipient) -> Result<Vec<u8>> {
        match self.key_op(Op::Reseal {
            container: self.inner.container.clone(),
            key: backup_key.clone(),
            sealed: ByteBuf::from(sealed.to_vec()),
            recipient: ByteBuf::from(recipient.spki.clone()),
            oaep: recipient.oaep,
        })? {
            Response::Resealed(s) => Ok(s.into_vec()),
            other => Err(unexpected(other)),
        }
    }
}

/// A key held by vaultd. Holds the public facts and a way to reach the daemon; nothing secret.
pub struct DaemonKey {
    client: DaemonClient,
    selector: KeySelector,
    info: KeyInfo,
}

impl fmt::Debug for DaemonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonKey").field("socket", &self.client.inner.socket).field("label", &self.info.label).finish()
    }
}

impl VaultKey for DaemonKey {
    fn info(&self) -> &KeyInfo {
        &self.info
    }

    fn sign(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>> {
        crate::key::check_sign(&self.info, alg)?;
        match self.client.key_op(Op::Sign {
            container: self.client.inner.container.clone(),
            key: self.selector.clone(),
            alg,
            msg: ByteBuf::from(msg.to_vec()),
        })? {
            Response::Signature(s) => Ok(s.into_vec()),
            other => Err(unexpected(other)),
        }
    }

    fn decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        crate::key::check_decrypt(&self.info, alg, ciphertext)?;
        match self.client.key_op(Op::Decrypt {
            container: self.client.inner.container.clone(),
            key: self.selector.clone(),
            alg,
            ciphertext: ByteBuf::from(ciphertext.to_vec()),
        })? {
            Response::Plaintext(p) => Ok(p.to_zeroizing()),
            other => Err(unexpected(other)),
        }
    }
}
