//! The daemon side: containers opened with a PIN, served over a Unix socket.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_bytes::ByteBuf;
use subtle::ConstantTimeEq;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::audit::{AuditLog, Event};
use crate::container::{self, Container, PinCounter, PinRole, SecretBytes, StoredKey};
use crate::error::{Result, VaultError};
use crate::key::{KeyInfo, KeyPolicy, KeySelector, SharedKey};
use crate::pkcs11::Pkcs11Token;
use crate::protocol::{self, ContainerSummary, ErrorCode, Op, Request, Response, StatusInfo, PROTOCOL_VERSION};
use crate::soft::{self, SoftKey};
use crate::store::KeyStore;
use crate::VaultKey;

mod import_sealed;
mod provisioning;
pub use provisioning::ensure_device_keys;

/// How the daemon is set up.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// Mode of the socket file (default 0660: owner and group).
    pub socket_mode: u32,
    /// Container files to serve.
    pub containers: Vec<PathBuf>,
    /// PKCS#11 tokens to front (`pkcs11:` URIs naming a token), so the token session lives in this process and
    /// not in the application's.
    pub tokens: Vec<crate::uri::Pkcs11Uri>,
    /// Where the audit log and PIN counter of each fronted token are kept (`<dir>/<serial>.audit`, `.pin`).
    pub state_dir: Option<PathBuf>,
    /// Connections served at once; more are refused with an error.
    pub max_connections: usize,
}

impl DaemonConfig {
    /// A configuration with defaults for one socket and the given containers.
    pub fn new(socket: impl Into<PathBuf>, containers: Vec<PathBuf>) -> Self {
        DaemonConfig {
            socket: socket.into(),
            socket_mode: 0o660,
            containers,
            tokens: Vec::new(),
            state_dir: None,
            max_connections: 256,
        }
    }
}

struct Open {
    container: Container,
    keys: Vec<Arc<SoftKey>>,
    pin_mac: [u8; 32],
}

/// What holds a slot's keys.
enum Backend {
    /// An emulated dongle: the container file, opened at the first login.
    Container { open: Box<RwLock<Option<Open>>>, _lock: File },
    /// A PKCS#11 token, logged in at the first login; `pin_mac` remembers that PIN.
    Token { token: Pkcs11Token, pin_mac: RwLock<Option<[u8; 32]>> },
}

/// One served container or token.
struct Slot {
    serial: String,
    /// The container file, or for a token the base name of its state files.
    path: PathBuf,
    max_attempts: u32,
    audit: AuditLog,
    backend: Backend,
    /// Serialises PIN checks so the failure counter cannot be raced.
    pin_lock: Mutex<()>,
    /// A per-process key to remember the PIN as a MAC after the first login, so later logins cost no Argon2 run.
    mac_key: [u8; 32],
}

/// A bound daemon, ready to [`Daemon::serve`].
pub struct Daemon {
    listener: UnixListener,
    shared: Arc<Shared>,
}

struct Shared {
    slots: Vec<Arc<Slot>>,
    connections: AtomicUsize,
    max_connections: usize,
    socket: PathBuf,
}

fn keys_of(c: &Container) -> Result<Vec<Arc<SoftKey>>> {
    c.body.keys.iter().map(|k| load_key(k).map(Arc::new)).collect()
}

fn load_key(k: &StoredKey) -> Result<SoftKey> {
    SoftKey::from_pkcs8(k.pkcs8.to_zeroizing(), k.id.clone(), k.label.clone(), k.made_inside, k.policy.clone())
}

fn random_key() -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    aws_lc_rs::rand::fill(&mut k).map_err(|_| VaultError::Crypto("no randomness".into()))?;
    Ok(k)
}

fn mac(key: &[u8; 32], pin: &[u8]) -> [u8; 32] {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&k, pin);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl Daemon {
    /// Takes each container's lock, opens its audit log, and binds the socket.
    pub fn bind(config: &DaemonConfig) -> Result<Daemon> {
        if config.containers.is_empty() && config.tokens.is_empty() {
            return Err(VaultError::InvalidInput("vaultd needs at least one --container or --pkcs11".into()));
        }
        let mut slots: Vec<Arc<Slot>> = Vec::new();
        let mut add = |slot: Slot| {
            if slots.iter().any(|s| s.serial == slot.serial) {
                return Err(VaultError::InvalidInput(format!("two slots share serial {}", slot.serial)));
            }
            slots.push(Arc::new(slot));
            Ok(())
        };
        for path in &config.containers {
            let lock = container::lock(path)?;
            let (header, _) = container::read_header(path)?;
            let audit = AuditLog::open(&container::sidecar(path, "audit"), &header.serial)?;
            info!(serial = %header.serial, path = %path.display(), "serving container");
            add(Slot {
                serial: header.serial.clone(),
                path: path.clone(),
                max_attempts: header.max_pin_attempts,
                audit,
                backend: Backend::Container { open: Box::new(RwLock::new(None)), _lock: lock },
                pin_lock: Mutex::new(()),
                mac_key: random_key()?,
            })?;
        }
        for uri in &config.tokens {
            let dir = config.state_dir.as_ref().ok_or_else(|| {
                VaultError::InvalidInput("fronting a PKCS#11 token needs --state-dir for its audit log".into())
            })?;
            // The PIN comes from the first client that logs in, as for containers; a PIN in the URI is ignored
            // so that the daemon never logs in on behalf of nobody.
            let mut bare = uri.clone();
            bare.pin = None;
            let token = Pkcs11Token::open_uri(&bare)?;
            let serial = format!("pkcs11-{}", token.label());
            let base = dir.join(&serial);
            let audit = AuditLog::open(&container::sidecar(&base, "audit"), &serial)?;
            info!(serial = %serial, uri = %uri.to_string_redacted(), "fronting PKCS#11 token");
            add(Slot {
                serial,
                path: base,
                max_attempts: 5,
                audit,
                backend: Backend::Token { token, pin_mac: RwLock::new(None) },
                pin_lock: Mutex::new(()),
                mac_key: random_key()?,
            })?;
        }
        if config.socket.exists() {
            if UnixStream::connect(&config.socket).is_ok() {
                return Err(VaultError::InvalidInput(format!(
                    "another vaultd is already listening on {}",
                    config.socket.display()
                )));
            }
            std::fs::remove_file(&config.socket)
                .map_err(|e| VaultError::io(format!("removing stale socket {}", config.socket.display()), e))?;
        }
        // Bind with a tight umask so the socket is never, even briefly, more open than asked.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(&config.socket);
        rustix::process::umask(old);
        let listener = bound.map_err(|e| VaultError::io(format!("binding {}", config.socket.display()), e))?;
        std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(config.socket_mode))
            .map_err(|e| VaultError::io(format!("chmod {}", config.socket.display()), e))?;
        Ok(Daemon {
            listener,
            shared: Arc::new(Shared {
                slots,
                connections: AtomicUsize::new(0),
                max_connections: config.max_connections.max(1),
                socket: config.socket.clone(),
            }),
        })
    }

    /// Serves connections until the process ends. Each connection gets its own thread.
    pub fn serve(self) -> Result<()> {
        info!(socket = %self.shared.socket.display(), "vaultd listening");
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    warn!("accept failed: {e}");
                    continue;
                }
            };
            let shared = self.shared.clone();
            if shared.connections.fetch_add(1, Ordering::SeqCst) >= shared.max_connections {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                let mut w = &stream;
                let _ = protocol::write_frame(
                    &mut w,
                    &Response::Error {
                        code: ErrorCode::Internal,
                        message: "too many connections to vaultd".into(),
                        attempts_left: None,
                    },
                );
                continue;
            }
            let spawned = std::thread::Builder::new().name("vaultd-conn".into()).spawn(move || {
                serve_connection(&shared, stream);
                shared.connections.fetch_sub(1, Ordering::SeqCst);
            });
            if let Err(e) = spawned {
                warn!("cannot start a connection thread: {e}");
                self.shared.connections.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

struct Conn {
    uid: Option<u32>,
    logged_in: HashSet<String>,
}

fn serve_connection(shared: &Shared, stream: UnixStream) {
    let uid = rustix::net::sockopt::socket_peercred(&stream).ok().map(|c| c.uid.as_raw());
    let pid = rustix::net::sockopt::socket_peercred(&stream).ok().map(|c| c.pid.as_raw_nonzero().get());
    debug!(?uid, ?pid, "connection");
    let mut conn = Conn { uid, logged_in: HashSet::new() };
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = BufWriter::new(stream);
    loop {
        let bytes = match protocol::read_frame_bytes(&mut reader) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                // The framing is lost (oversized or cut frame): say why and drop this connection only.
                debug!("closing connection: {e}");
                let _ = protocol::write_frame(&mut writer, &Response::from_error(&e));
                let _ = writer.flush();
                return;
            }
        };
        let response = match protocol::decode::<Request>(&bytes) {
            Ok(req) if req.v != PROTOCOL_VERSION => Response::Error {
                code: ErrorCode::Version,
                message: format!(
                    "protocol version {} is not spoken here; this vaultd speaks {PROTOCOL_VERSION}",
                    req.v
                ),
                attempts_left: None,
            },
            Ok(req) => match handle(shared, &mut conn, req.op) {
                Ok(r) => r,
                Err(e) => Response::from_error(&e),
            },
            Err(e) => Response::from_error(&e),
        };
        if protocol::write_frame(&mut writer, &response).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

fn slot<'a>(shared: &'a Shared, serial: &Option<String>) -> Result<&'a Arc<Slot>> {
    match serial {
        Some(s) => shared
            .slots
            .iter()
            .find(|slot| &slot.serial == s)
            .ok_or_else(|| VaultError::KeyNotFound(format!("container {s:?}: this vaultd does not serve it"))),
        None if shared.slots.len() == 1 => Ok(&shared.slots[0]),
        None => Err(VaultError::InvalidInput(format!(
            "this vaultd serves {} containers; name one by serial",
            shared.slots.len()
        ))),
    }
}

fn lock_err<T>(_: T) -> VaultError {
    VaultError::Crypto("internal lock poisoned".into())
}

impl Slot {
    fn require_login(&self, conn: &Conn) -> Result<()> {
        if conn.logged_in.contains(&self.serial) {
            Ok(())
        } else {
            Err(VaultError::NotLoggedIn)
        }
    }

    fn audit(&self, conn: &Conn, op: &str, key: Option<&str>, detail: Option<String>, ok: bool) -> Result<()> {
        self.audit.append(Event { uid: conn.uid, op, key, detail, ok }).map(|_| ())
    }

    /// Checks the user PIN, keeping the persistent failure counter.
    fn check_pin(&self, conn: &Conn, pin: &[u8]) -> Result<()> {
        let _g = self.pin_lock.lock().map_err(lock_err)?;
        let mut counter = PinCounter::load(&self.path, self.max_attempts);
        if counter.failures >= self.max_attempts {
            self.audit(conn, "login-refused", None, Some("locked".into()), false)?;
            return Err(VaultError::PinLocked);
        }
        let good = match &self.backend {
            Backend::Container { open, .. } => {
                let known = open.read().map_err(lock_err)?.as_ref().map(|o| o.pin_mac);
                match known {
                    Some(m) => bool::from(mac(&self.mac_key, pin).ct_eq(&m)),
                    None => match Container::open(&self.path, pin, PinRole::User)? {
                        Some(c) => {
                            let keys = keys_of(&c)?;
                            let pin_mac = mac(&self.mac_key, pin);
                            *open.write().map_err(lock_err)? = Some(Open { container: c, keys, pin_mac });
                            true
                        }
                        None => false,
                    },
                }
            }
            Backend::Token { token, pin_mac } => {
                let known = *pin_mac.read().map_err(lock_err)?;
                match known {
                    Some(m) => bool::from(mac(&self.mac_key, pin).ct_eq(&m)),
                    None => match token.login(pin) {
                        Ok(()) => {
                            *pin_mac.write().map_err(lock_err)? = Some(mac(&self.mac_key, pin));
                            true
                        }
                        Err(VaultError::WrongPin { .. }) => false,
                        Err(e) => return Err(e),
                    },
                }
            }
        };
        if good {
            if counter.failures != 0 {
                counter.failures = 0;
                counter.store(&self.path)?;
            }
            Ok(())
        } else {
            counter.failures += 1;
            counter.store(&self.path)?;
            let left = self.max_attempts.saturating_sub(counter.failures);
            self.audit(conn, "login-failed", None, Some(format!("{left} attempts left")), false)?;
            warn!(serial = %self.serial, uid = ?conn.uid, left, "wrong PIN");
            if left == 0 {
                Err(VaultError::PinLocked)
            } else {
                Err(VaultError::WrongPin { attempts_left: left })
            }
        }
    }

    fn find(&self, conn: &Conn, sel: &KeySelector) -> Result<SharedKey> {
        self.require_login(conn)?;
        let key: SharedKey = match &self.backend {
            Backend::Container { open, .. } => {
                let open = open.read().map_err(lock_err)?;
                let open = open.as_ref().ok_or(VaultError::NotLoggedIn)?;
                open.keys
                    .iter()
                    .find(|k| sel.matches(k.info()))
                    .ok_or_else(|| VaultError::KeyNotFound(format!("{sel} in container {}", self.serial)))?
                    .clone()
            }
            Backend::Token { token, .. } => token.key(sel)?,
        };
        let allowed = &key.info().policy.allowed_uids;
        if !allowed.is_empty() && !conn.uid.is_some_and(|u| allowed.contains(&u)) {
            return Err(VaultError::AccessDenied(format!("uid {:?} may not use key {:?}", conn.uid, key.info().label)));
        }
        Ok(key)
    }

    fn list(&self, conn: &Conn) -> Result<Vec<KeyInfo>> {
        self.require_login(conn)?;
        match &self.backend {
            Backend::Container { open, .. } => {
                let open = open.read().map_err(lock_err)?;
                let open = open.as_ref().ok_or(VaultError::NotLoggedIn)?;
                Ok(open.keys.iter().map(|k| k.info().clone()).collect())
            }
            Backend::Token { token, .. } => token.list(),
        }
    }

    fn container(&self) -> Result<&RwLock<Option<Open>>> {
        match &self.backend {
            Backend::Container { open, .. } => Ok(open),
            Backend::Token { .. } => Err(VaultError::InvalidInput(format!(
                "{} is a PKCS#11 token: manage its PINs with the token's own tools",
                self.serial
            ))),
        }
    }

    /// Applies a change to the container and saves it; on a failed save the change is undone in memory too, so
    /// memory never claims what the disk does not hold.
    fn mutate<T>(&self, f: impl FnOnce(&mut Open) -> Result<T>) -> Result<T> {
        let mut guard = self.container()?.write().map_err(lock_err)?;
        let open = guard.as_mut().ok_or(VaultError::NotLoggedIn)?;
        let before_body = open.container.body.clone();
        let before_keys = open.keys.clone();
        let out = f(open)?;
        if let Err(e) = open.container.save() {
            open.container.body = before_body;
            open.keys = before_keys;
            return Err(e);
        }
        Ok(out)
    }

    fn add_key(&self, conn: &Conn, label: &str, source: NewKey, policy: KeyPolicy) -> Result<KeyInfo> {
        self.require_login(conn)?;
        if label.is_empty() || label.len() > 128 {
            return Err(VaultError::InvalidInput("a label is 1 to 128 characters".into()));
        }
        if crate::provision::is_reserved_label(label) {
            return Err(VaultError::InvalidInput(format!(
                "labels starting with {:?} belong to the vault itself (use `certvault device init`)",
                crate::provision::RESERVED_PREFIX
            )));
        }
        let made_inside = matches!(source, NewKey::Generate(_));
        let op = if made_inside { "generate" } else { "import" };
        if let Backend::Token { token, .. } = &self.backend {
            let result = match source {
                NewKey::Generate(alg) => token.generate(label, alg, policy),
                NewKey::Import(pkcs8) => token.import_pkcs8(label, pkcs8, policy),
            };
            let detail = result.as_ref().map(|i| i.algorithm.to_string()).ok();
            self.audit(conn, op, Some(label), detail, result.is_ok())?;
            return result;
        }
        // Generate before taking any lock: an RSA-4096 key takes seconds and signing must go on meanwhile.
        let pkcs8 = match source {
            NewKey::Generate(alg) => soft::generate_pkcs8(alg)?,
            NewKey::Import(pkcs8) => pkcs8,
        };
        let mut id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| VaultError::Crypto("no randomness".into()))?;
        let key = SoftKey::from_pkcs8(pkcs8, id.clone(), label.to_string(), made_inside, policy.clone())?;
        let info = key.info().clone();
        let result = self.mutate(|open| {
            if open.container.body.keys.iter().any(|k| k.label == label) {
                return Err(VaultError::DuplicateLabel(label.to_string()));
            }
            open.container.body.keys.push(StoredKey {
                id,
                label: label.to_string(),
                pkcs8: SecretBytes::new(key.pkcs8().to_vec()),
                made_inside,
                policy,
                chain: Vec::new(),
                created: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            });
            open.keys.push(Arc::new(key));
            Ok(())
        });
        self.audit(conn, op, Some(label), Some(info.algorithm.to_string()), result.is_ok())?;
        result.map(|()| info)
    }
}

/// Where a new key comes from.
enum NewKey {
    Generate(crate::KeyAlgorithm),
    Import(Zeroizing<Vec<u8>>),
}

fn handle(shared: &Shared, conn: &mut Conn, op: Op) -> Result<Response> {
    match op {
        Op::Hello => Ok(Response::Hello {
            protocol: PROTOCOL_VERSION,
            daemon: format!("vaultd {}", env!("CARGO_PKG_VERSION")),
            containers: shared
                .slots
                .iter()
                .map(|s| ContainerSummary {
                    serial: s.serial.clone(),
                    backend: match s.backend {
                        Backend::Container { .. } => "container".into(),
                        Backend::Token { .. } => "pkcs11".into(),
                    },
                })
                .collect(),
        }),
        Op::Login { container, pin } => {
            let s = slot(shared, &container)?;
            s.check_pin(conn, pin.expose())?;
            s.audit(conn, "login", None, None, true)?;
            conn.logged_in.insert(s.serial.clone());
            Ok(Response::Ok)
        }
        Op::Status { container } => {
            let s = slot(shared, &container)?;
            let failures = PinCounter::load(&s.path, s.max_attempts).failures;
            let none = RwLock::new(None);
            let open = s.container().unwrap_or(&none).read().map_err(lock_err)?;
            let audit_records = s.audit.records();
            Ok(Response::Status(StatusInfo {
                serial: s.serial.clone(),
                locked: failures >= s.max_attempts,
                attempts_left: s.max_attempts.saturating_sub(failures),
                logged_in: conn.logged_in.contains(&s.serial),
                update_counter: open.as_ref().map(|o| o.container.body.update_counter),
                keys: open.as_ref().map(|o| o.keys.len() as u32),
                audit_records,
            }))
        }
        Op::List { container } => {
            let s = slot(shared, &container)?;
            Ok(Response::Keys(s.list(conn)?))
        }
        Op::Info { container, key } => {
            let s = slot(shared, &container)?;
            Ok(Response::Key(s.find(conn, &key)?.info().clone()))
        }
        Op::Generate { container, label, algorithm, policy } => {
            let s = slot(shared, &container)?;
            Ok(Response::Key(s.add_key(conn, &label, NewKey::Generate(algorithm), policy)?))
        }
        Op::ImportPkcs8 { container, label, pkcs8, policy } => {
            let s = slot(shared, &container)?;
            Ok(Response::Key(s.add_key(conn, &label, NewKey::Import(pkcs8.to_zeroizing()), policy)?))
        }
        Op::Sign { container, key, alg, msg } => {
            let s = slot(shared, &container)?;
            let k = s.find(conn, &key)?;
            let result = k.sign(alg, &msg);
            s.audit(conn, "sign", Some(&k.info().label), Some(alg.to_string()), result.is_ok())?;
            Ok(Response::Signature(ByteBuf::from(result?)))
        }
        Op::Decrypt { container, key, alg, ciphertext } => {
            let s = slot(shared, &container)?;
            let k = s.find(conn, &key)?;
            if k.info().policy.unwrap_only {
                s.audit(conn, "decrypt", Some(&k.info().label), Some("refused: unwrap-only".into()), false)?;
                return Err(VaultError::Unsupported {
                    key: k.info().label.clone(),
                    alg: alg.to_string(),
                    why: "the key is unwrap-only: it opens sealed keys inside the vault and returns no plaintext"
                        .into(),
                });
            }
            let result = k.decrypt(alg, &ciphertext);
            s.audit(conn, "decrypt", Some(&k.info().label), Some(alg.to_string()), result.is_ok())?;
            let plain = result?;
            Ok(Response::Plaintext(SecretBytes::new(plain.to_vec())))
        }
        Op::ReadChain { container, key } => {
            let s = slot(shared, &container)?;
            let k = s.find(conn, &key)?;
            let chain = match &s.backend {
                Backend::Token { token, .. } => {
                    token.cert_chain(&KeySelector::Id(k.info().id.clone()))?.into_iter().map(ByteBuf::from).collect()
                }
                Backend::Container { open, .. } => open
                    .read()
                    .map_err(lock_err)?
                    .as_ref()
                    .and_then(|o| o.container.body.keys.iter().find(|sk| sk.id == k.info().id))
                    .map(|sk| sk.chain.clone())
                    .unwrap_or_default(),
            };
            Ok(Response::Chain(chain))
        }
        Op::StoreChain { container, key, chain } => {
            let s = slot(shared, &container)?;
            let k = s.find(conn, &key)?;
            let chain: Vec<Vec<u8>> = chain.into_iter().map(ByteBuf::into_vec).collect();
            crate::store::check_leaf_matches(k.info(), &chain)?;
            if let Backend::Token { token, .. } = &s.backend {
                let result = token.store_cert_chain(&KeySelector::Id(k.info().id.clone()), chain);
                s.audit(conn, "store-chain", Some(&k.info().label), None, result.is_ok())?;
                return result.map(|()| Response::Ok);
            }
            let result = s.mutate(|open| {
                let sk = open
                    .container
                    .body
                    .keys
                    .iter_mut()
                    .find(|sk| sk.id == k.info().id)
                    .ok_or_else(|| VaultError::KeyNotFound(k.info().label.clone()))?;
                sk.chain = chain.into_iter().map(ByteBuf::from).collect();
                Ok(())
            });
            s.audit(conn, "store-chain", Some(&k.info().label), None, result.is_ok())?;
            result.map(|()| Response::Ok)
        }
        Op::CreateCsr { container, key, request } => {
            let s = slot(shared, &container)?;
            let k = s.find(conn, &key)?;
            let result = crate::csr::create_csr(k.as_ref(), &request);
            s.audit(conn, "csr", Some(&k.info().label), Some(request.common_name.clone()), result.is_ok())?;
            Ok(Response::Csr(ByteBuf::from(result?)))
        }
        Op::ReadAudit { container, from, max } => {
            let s = slot(shared, &container)?;
            s.require_login(conn)?;
            Ok(Response::Audit(s.audit.read(from, max.min(100_000) as usize)?))
        }
        Op::ChangePin { container, old, new } => {
            let s = slot(shared, &container)?;
            s.container()?;
            s.check_pin(conn, old.expose())?;
            let new_mac = mac(&s.mac_key, new.expose());
            let result = s.mutate(|open| {
                open.container.set_user_pin(new.expose())?;
                open.pin_mac = new_mac;
                Ok(())
            });
            s.audit(conn, "change-pin", None, None, result.is_ok())?;
            result.map(|()| Response::Ok)
        }
        Op::Unlock { container, admin_pin, new_pin } => {
            let s = slot(shared, &container)?;
            let open = s.container()?;
            let _g = s.pin_lock.lock().map_err(lock_err)?;
            let Some(mut c) = Container::open(&s.path, admin_pin.expose(), PinRole::Admin)? else {
                s.audit(conn, "unlock-failed", None, Some("wrong admin PIN".into()), false)?;
                return Err(VaultError::AccessDenied("wrong admin PIN".into()));
            };
            c.set_user_pin(new_pin.expose())?;
            c.save()?;
            PinCounter::default().store(&s.path)?;
            let keys = keys_of(&c)?;
            *open.write().map_err(lock_err)? =
                Some(Open { container: c, keys, pin_mac: mac(&s.mac_key, new_pin.expose()) });
            s.audit(conn, "unlock", None, Some("user PIN reset with the admin PIN".into()), true)?;
            Ok(Response::Ok)
        }
        Op::DeviceInit { container } => Ok(Response::Device(slot(shared, &container)?.device_init(conn)?)),
        Op::DeviceInfo { container } => Ok(Response::Device(slot(shared, &container)?.device_info(conn)?)),
        Op::TrustCentral { container, admin_pin, cert } => {
            slot(shared, &container)?.trust_central(conn, admin_pin.expose(), cert.into_vec())?;
            Ok(Response::Ok)
        }
        Op::BeginRequest { container } => Ok(Response::RequestContext(slot(shared, &container)?.begin_request(conn)?)),
        Op::ApplyUpdate { container, update } => {
            Ok(Response::Applied(slot(shared, &container)?.apply_update(conn, &update)?))
        }
        Op::GenerateSealed { container, algorithm, recipients, oaep } => {
            let recipients: Vec<crate::provision::Recipient> = recipients
                .into_iter()
                .enumerate()
                .map(|(i, spki)| crate::provision::Recipient {
                    spki: spki.into_vec(),
                    oaep: oaep.get(i).copied().unwrap_or_default(),
                })
                .collect();
            Ok(Response::Sealed(slot(shared, &container)?.generate_sealed(conn, algorithm, &recipients)?))
        }
        Op::Reseal { container, key, sealed, recipient, oaep } => {
            let s = slot(shared, &container)?;
            let k = provisioning::find_for_reseal(s, conn, &key)?;
            let recipient = crate::provision::Recipient { spki: recipient.into_vec(), oaep };
            Ok(Response::Resealed(ByteBuf::from(s.reseal(k, conn, &sealed, &recipient)?)))
        }
        Op::ImportSealed { container, label, sealed, certificate } => {
            let s = slot(shared, &container)?;
            Ok(Response::Key(s.import_sealed(conn, &label, &sealed, certificate.as_ref().map(|c| c.as_slice()))?))
        }
    }
}

/// Where the daemon listens when nothing else is said: `$CERTVAULT_SOCKET`, else `/run/certvault/vaultd.sock`.
pub fn default_socket() -> PathBuf {
    std::env::var_os("CERTVAULT_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/run/certvault/vaultd.sock").to_path_buf())
}
