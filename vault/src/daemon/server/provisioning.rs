//! vaultd's side of certificate provisioning: device keys, request nonces, applying updates atomically, and the
//! central's key maker. Sealed keys are opened here, inside the daemon, and nowhere else.

use std::sync::Arc;

use serde_bytes::ByteBuf;
use tracing::info;

use super::{lock_err, Backend, Conn, Open, Slot};
use crate::container::{Container, PinRole, SecretBytes, StoredKey};
use crate::error::{Result, VaultError};
use crate::key::{KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector, SharedKey, VaultKey};
use crate::protocol::{ApplyReport, DeviceState, RequestContext};
use crate::provision::{
    self, seal, Expected, Recipient, SealedKeys, Thumbprint, DEVICE_KEY_LABEL, TRANSPORT_KEY_LABEL,
};
use crate::soft::{self, SoftKey};

/// The device identity key: small and fast signatures.
const DEVICE_KEY_ALG: KeyAlgorithm = KeyAlgorithm::EcP256;
/// The transport key: RSA, since sealed keys use RSA-OAEP key transport.
const TRANSPORT_KEY_ALG: KeyAlgorithm = KeyAlgorithm::Rsa { bits: 2048 };

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_id() -> Result<Vec<u8>> {
    let mut id = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| VaultError::Crypto("no randomness".into()))?;
    Ok(id)
}

/// A key made inside, ready to be pushed into a container body and the daemon's key table.
fn make_key(label: &str, alg: KeyAlgorithm, policy: KeyPolicy) -> Result<(StoredKey, Arc<SoftKey>)> {
    let pkcs8 = soft::generate_pkcs8(alg)?;
    let id = random_id()?;
    let key = SoftKey::from_pkcs8(pkcs8, id.clone(), label.to_string(), true, policy.clone())?;
    let stored = StoredKey {
        id,
        label: label.to_string(),
        pkcs8: SecretBytes::new(key.pkcs8().to_vec()),
        made_inside: true,
        policy,
        chain: Vec::new(),
        created: now(),
    };
    Ok((stored, Arc::new(key)))
}

fn transport_policy() -> KeyPolicy {
    KeyPolicy { unwrap_only: true, ..KeyPolicy::default() }
}

/// Adds the device identity and transport keys to a container that lacks them; true when something was added.
/// Used by `certvault init` (offline) and by the `device-init` operation.
pub fn ensure_device_keys(container: &mut Container) -> Result<bool> {
    let mut added = false;
    for (label, alg, policy) in [
        (DEVICE_KEY_LABEL, DEVICE_KEY_ALG, KeyPolicy::default()),
        (TRANSPORT_KEY_LABEL, TRANSPORT_KEY_ALG, transport_policy()),
    ] {
        if !container.body.keys.iter().any(|k| k.label == label) {
            container.body.keys.push(make_key(label, alg, policy)?.0);
            added = true;
        }
    }
    Ok(added)
}

fn info_of(open: &Open, label: &str) -> Option<KeyInfo> {
    open.keys.iter().find(|k| k.info().label == label).map(|k| k.info().clone())
}

fn state(open: &Open) -> DeviceState {
    let body = &open.container.body;
    DeviceState {
        serial: body.serial.clone(),
        counter: body.update_counter,
        device_key: info_of(open, DEVICE_KEY_LABEL),
        transport_key: info_of(open, TRANSPORT_KEY_LABEL),
        pending_request: body.pending_nonce.is_some(),
        central_cert: body.central_cert.clone(),
    }
}

fn not_initialised(serial: &str) -> VaultError {
    VaultError::InvalidInput(format!("dongle {serial} has no device identity yet: run `certvault device init` first"))
}

fn token_unsupported(serial: &str) -> VaultError {
    VaultError::Unsupported {
        key: String::new(),
        alg: String::new(),
        why: format!(
            "{serial} is a PKCS#11 token fronted by vaultd: pin the central on the token itself with \
             `certvault --pkcs11 <URI> device trust-central`"
        ),
    }
}

impl Slot {
    fn open_container(&self) -> Result<&std::sync::RwLock<Option<Open>>> {
        match &self.backend {
            Backend::Container { open, .. } => Ok(open),
            Backend::Token { .. } => Err(token_unsupported(&self.serial)),
        }
    }

    pub(super) fn device_init(&self, conn: &Conn) -> Result<DeviceState> {
        self.require_login(conn)?;
        if let Backend::Token { token, .. } = &self.backend {
            let result = token.device_init();
            self.audit(conn, "device-init", None, None, result.is_ok())?;
            return result;
        }
        {
            let guard = self.open_container()?.read().map_err(lock_err)?;
            let s = state(guard.as_ref().ok_or(VaultError::NotLoggedIn)?);
            if s.device_key.is_some() && s.transport_key.is_some() {
                return Ok(s);
            }
        }
        // Generate outside the lock (RSA takes a while); insert only what is still missing.
        let device = make_key(DEVICE_KEY_LABEL, DEVICE_KEY_ALG, KeyPolicy::default())?;
        let transport = make_key(TRANSPORT_KEY_LABEL, TRANSPORT_KEY_ALG, transport_policy())?;
        let result = self.mutate(|open| {
            let mut added = Vec::new();
            for (stored, key) in [device, transport] {
                if !open.container.body.keys.iter().any(|k| k.label == stored.label) {
                    added.push(stored.label.clone());
                    open.container.body.keys.push(stored);
                    open.keys.push(key);
                }
            }
            Ok((state(open), added))
        });
        let detail = result.as_ref().ok().map(|(_, a)| format!("made: {}", a.join(", ")));
        self.audit(conn, "device-init", None, detail, result.is_ok())?;
        result.map(|(s, _)| s)
    }

    pub(super) fn device_info(&self, conn: &Conn) -> Result<DeviceState> {
        self.require_login(conn)?;
        if let Backend::Token { token, .. } = &self.backend {
            return token.device_info();
        }
        let guard = self.open_container()?.read().map_err(lock_err)?;
        Ok(state(guard.as_ref().ok_or(VaultError::NotLoggedIn)?))
    }

    pub(super) fn trust_central(&self, conn: &Conn, admin_pin: &[u8], cert: Vec<u8>) -> Result<()> {
        self.require_login(conn)?;
        self.open_container()?;
        crate::PublicKey::from_certificate(&cert)?;
        let admin_ok = {
            let _g = self.pin_lock.lock().map_err(lock_err)?;
            Container::open(&self.path, admin_pin, PinRole::Admin)?.is_some()
        };
        if !admin_ok {
            self.audit(conn, "trust-central-failed", None, Some("wrong admin PIN".into()), false)?;
            return Err(VaultError::AccessDenied("wrong admin PIN".into()));
        }
        let thumb = provision::thumbprint(&cert);
        let result = self.mutate(|open| {
            open.container.body.central_cert = Some(ByteBuf::from(cert));
            Ok(())
        });
        self.audit(conn, "trust-central", None, Some(format!("sha256 {thumb}")), result.is_ok())?;
        result
    }

    pub(super) fn begin_request(&self, conn: &Conn) -> Result<RequestContext> {
        self.require_login(conn)?;
        if let Backend::Token { token, .. } = &self.backend {
            let result = token.begin_request().map(|(ctx, _)| ctx);
            self.audit(conn, "begin-request", None, None, result.is_ok())?;
            return result;
        }
        self.open_container()?;
        let nonce = provision::fresh_nonce().map_err(VaultError::from)?;
        let result = self.mutate(|open| {
            let s = state(open);
            let (Some(device), Some(transport)) = (s.device_key, s.transport_key) else {
                return Err(not_initialised(&s.serial));
            };
            open.container.body.pending_nonce = Some(ByteBuf::from(nonce.to_vec()));
            Ok(RequestContext {
                serial: s.serial,
                counter: s.counter,
                nonce: ByteBuf::from(nonce.to_vec()),
                device_key: ByteBuf::from(device.spki_der),
                transport_key: ByteBuf::from(transport.spki_der),
                transport_oaep: provision::OaepHash::Sha256,
            })
        });
        let detail = result.as_ref().ok().map(|c| format!("counter {}", c.counter));
        self.audit(conn, "begin-request", None, detail, result.is_ok())?;
        result
    }

    /// Verifies and applies an update. Everything is checked and every sealed key opened before the container
    /// changes; then keys, chains, the counter and the cleared nonce are saved in one atomic write.
    pub(super) fn apply_update(&self, conn: &Conn, der: &[u8]) -> Result<ApplyReport> {
        self.require_login(conn)?;
        if let Backend::Token { token, .. } = &self.backend {
            let result = token.apply_update(der);
            let detail = result.as_ref().map(|r| format!("counter {}", r.counter)).unwrap_or_else(|e| e.to_string());
            self.audit(conn, "apply-update", None, Some(detail), result.is_ok())?;
            return result;
        }
        let lock = self.open_container()?;
        let mut guard = lock.write().map_err(lock_err)?;
        let open = guard.as_mut().ok_or(VaultError::NotLoggedIn)?;
        let result = apply_locked(open, der);
        let detail = match &result {
            Ok(r) => format!("counter {}, stored {}", r.counter, r.certificates.len()),
            Err(e) => e.to_string(),
        };
        drop(guard);
        self.audit(conn, "apply-update", None, Some(detail), result.is_ok())?;
        if let Ok(r) = &result {
            info!(serial = %self.serial, counter = r.counter, "applied update");
        }
        result
    }

    pub(super) fn generate_sealed(
        &self,
        conn: &Conn,
        algorithm: KeyAlgorithm,
        recipients: &[Recipient],
    ) -> Result<SealedKeys> {
        self.require_login(conn)?;
        if recipients.is_empty() {
            return Err(VaultError::InvalidInput("generate-sealed needs at least one recipient".into()));
        }
        let result = (|| {
            let pkcs8 = soft::generate_pkcs8(algorithm)?;
            let key = SoftKey::from_pkcs8(pkcs8, Vec::new(), String::new(), true, KeyPolicy::default())?;
            let sealed = recipients
                .iter()
                .map(|r| seal::seal(key.pkcs8(), r).map(ByteBuf::from).map_err(VaultError::from))
                .collect::<Result<Vec<_>>>()?;
            Ok(SealedKeys { spki: key.info().spki_der.clone(), sealed })
        })();
        let detail = format!("{algorithm} to {} recipient(s)", recipients.len());
        self.audit(conn, "generate-sealed", None, Some(detail), result.is_ok())?;
        result
    }

    pub(super) fn reseal(&self, key: SharedKey, conn: &Conn, sealed: &[u8], recipient: &Recipient) -> Result<Vec<u8>> {
        let label = key.info().label.clone();
        let result = (|| {
            if !key.info().policy.unwrap_only {
                return Err(VaultError::InvalidInput(format!(
                    "key {label:?} is not unwrap-only: a backup key must be made with the unwrap-only policy"
                )));
            }
            let pkcs8 = seal::open(sealed, key.as_ref())?;
            Ok(seal::seal(&pkcs8, recipient)?)
        })();
        self.audit(conn, "reseal", Some(&label), None, result.is_ok())?;
        result
    }
}

fn apply_locked(open: &mut Open, der: &[u8]) -> Result<ApplyReport> {
    let body = &open.container.body;
    let central = body.central_cert.as_ref().ok_or_else(|| {
        VaultError::InvalidInput(
            "no central is trusted yet: pin its certificate with `certvault device trust-central`".into(),
        )
    })?;
    // With no request outstanding every update is a replay; verifying against an empty nonce says so.
    let pending = body.pending_nonce.as_ref().map(|n| n.to_vec()).unwrap_or_default();
    let expected = Expected { serial: &body.serial, nonce: &pending, counter: body.update_counter.saturating_add(1) };
    let update = provision::verify_update(der, central, &expected)?;
    let transport = open
        .keys
        .iter()
        .find(|k| k.info().label == TRANSPORT_KEY_LABEL)
        .cloned()
        .ok_or_else(|| not_initialised(&body.serial))?;

    // Stage everything first: a failure here leaves the container untouched.
    enum Staged {
        Chain { label: String, chain: Vec<ByteBuf> },
        Key { stored: StoredKey, key: Arc<SoftKey> },
    }
    let mut staged = Vec::new();
    let mut certificates = Vec::new();
    let mut imported = Vec::new();
    for item in &update.items {
        let bad = |why: String| VaultError::InvalidInput(format!("update item {:?}: {why}", item.label));
        let chain: Vec<ByteBuf> = item.chain.iter().cloned().map(ByteBuf::from).collect();
        match &item.sealed_key {
            Some(sealed) => {
                let pkcs8 = seal::open(sealed, transport.as_ref()).map_err(|e| bad(e.to_string()))?;
                let id = random_id()?;
                let key = SoftKey::from_pkcs8(pkcs8, id.clone(), item.label.clone(), false, KeyPolicy::default())
                    .map_err(|e| bad(format!("the sealed key: {e}")))?;
                crate::store::check_leaf_matches(key.info(), &item.chain).map_err(|e| bad(e.to_string()))?;
                let stored = StoredKey {
                    id,
                    label: item.label.clone(),
                    pkcs8: SecretBytes::new(key.pkcs8().to_vec()),
                    made_inside: false,
                    policy: KeyPolicy::default(),
                    chain,
                    created: now(),
                };
                imported.push(item.label.clone());
                staged.push(Staged::Key { stored, key: Arc::new(key) });
            }
            None => {
                let info = info_of(open, &item.label)
                    .ok_or_else(|| bad("no key with this label is in the vault, and the update brings none".into()))?;
                crate::store::check_leaf_matches(&info, &item.chain).map_err(|e| bad(e.to_string()))?;
                staged.push(Staged::Chain { label: item.label.clone(), chain });
            }
        }
        certificates.push(Thumbprint { label: item.label.clone(), sha256: provision::thumbprint(&item.chain[0]) });
    }

    let before_body = open.container.body.clone();
    let before_keys = open.keys.clone();
    for s in staged {
        match s {
            Staged::Chain { label, chain } => {
                if let Some(k) = open.container.body.keys.iter_mut().find(|k| k.label == label) {
                    k.chain = chain;
                }
            }
            Staged::Key { stored, key } => {
                // A central-made key replaces the key of the same label (rotation), in the same write.
                open.container.body.keys.retain(|k| k.label != stored.label);
                open.keys.retain(|k| k.info().label != stored.label);
                open.container.body.keys.push(stored);
                open.keys.push(key);
            }
        }
    }
    open.container.body.update_counter = update.counter;
    open.container.body.pending_nonce = None;
    if let Err(e) = open.container.save() {
        open.container.body = before_body;
        open.keys = before_keys;
        return Err(e);
    }
    Ok(ApplyReport {
        serial: update.serial,
        counter: update.counter,
        nonce: ByteBuf::from(update.nonce),
        certificates,
        imported_keys: imported,
    })
}

/// Finds a key for `reseal`, with the usual access checks.
pub(super) fn find_for_reseal(slot: &Slot, conn: &Conn, sel: &KeySelector) -> Result<SharedKey> {
    slot.find(conn, sel)
}
