//! Keys on PKCS#11 tokens (SoftHSM2, HSMs, smartcards, tpm2-pkcs11), through `cryptoki`.
//!
//! - [`Pkcs11Token`] is a [`KeyStore`]: list, generate, import, certificates.
//! - [`Pkcs11Key`] is a [`VaultKey`]: sign and decrypt on the token, with software help where a token lacks a
//!   mechanism (hashing, DigestInfo, OAEP-SHA256 decoding); the private key never leaves the token.
//!
//! ```no_run
//! use certvault::pkcs11::Pkcs11Key;
//! use certvault::{SignAlg, VaultKey};
//! let key = Pkcs11Key::open_uri(
//!     &"pkcs11:token=vault;object=opcua-server?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/certvault/pin"
//!         .parse()?,
//! )?;
//! let sig = key.sign(SignAlg::RsaPssSha256, b"to be signed")?;
//! # Ok::<(), certvault::VaultError>(())
//! ```
//!
//! Facts about PKCS#11 this module is shaped by (see `research/pkcs11-findings.md`):
//! - `C_Initialize` and the login state are per process and per token. One context per module path lives for the
//!   whole process and is never finalized (that would kill every other user of the module in the process). Closing
//!   the last session logs out, so each open token keeps an anchor session.
//! - Logging in again while logged in returns `CKR_USER_ALREADY_LOGGED_IN` *without checking the PIN*: a second
//!   [`Pkcs11Token`] on a token this process is logged in to succeeds whatever PIN it gives.
//! - A session runs one operation at a time and some modules (tpm2-pkcs11) leave a failed operation active, so
//!   keys take a session from a small pool per operation and throw it away after any error.
//! - The key policy ([`KeyPolicy`]) has no PKCS#11 attribute. It is stored as a private CKO_DATA object
//!   (application `certvault key policy`, label = hex CKA_ID, value = JSON) and enforced by this crate: anyone
//!   with the PIN and another PKCS#11 client can still use the token's raw mechanisms.

mod der;
mod import_sealed;
mod provision;
pub mod softhsm;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{RawAuthPin, Ulong};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Result, VaultError};
use crate::key::{
    check_decrypt, check_sign, DecryptAlg, HashAlg, KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector, SharedKey, SignAlg,
    VaultKey,
};
use crate::store::{check_leaf_matches, KeyStore};
use crate::uri::Pkcs11Uri;

/// Idle sessions kept per token; more are opened when more threads sign at once, and closed afterwards.
const MAX_IDLE_SESSIONS: usize = 4;
/// CKA_APPLICATION of the data objects that hold key policies.
const POLICY_APPLICATION: &[u8] = b"certvault key policy";
/// Environment variable naming the module when a URI has no `module-path`.
pub const MODULE_ENV: &str = "PKCS11_MODULE";

/// One initialized context per module, for the life of the process (see the module docs).
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    // Two spellings of one library share one dlopen handle; keying by the canonical path avoids a second
    // C_Initialize (which would be harmless, but wasteful).
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut map = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(ctx) = map.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&key)
        .map_err(|e| VaultError::Pkcs11(format!("cannot load PKCS#11 module {}: {e}", module.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (another library, or a context we no longer know) initialized it.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck_err(e)),
    }
    map.insert(key, ctx.clone());
    Ok(ctx)
}

/// Locks, ignoring poisoning: the guarded data (session lists, a unit) stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `PinIncorrect` -> `CKR_PIN_INCORRECT`, so messages use the names in the PKCS#11 specification and module logs.
fn ckr_name(rv: &RvError) -> String {
    let camel = format!("{rv:?}");
    if camel.contains('(') {
        return camel;
    }
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn ck_err(e: CkError) -> VaultError {
    match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => VaultError::WrongPin { attempts_left: 0 },
        CkError::Pkcs11(RvError::PinLocked, _) => VaultError::PinLocked,
        CkError::Pkcs11(RvError::UserNotLoggedIn, _) => VaultError::NotLoggedIn,
        CkError::Pkcs11(rv, f) => VaultError::Pkcs11(format!("C_{f:?} failed with {}", ckr_name(&rv))),
        other => VaultError::Pkcs11(other.to_string()),
    }
}

/// Errors of C_Decrypt itself say something about the plaintext: report them all as one [`VaultError::DecryptFailed`].
fn decrypt_err(e: CkError) -> VaultError {
    match e {
        CkError::Pkcs11(RvError::UserNotLoggedIn, _) => VaultError::NotLoggedIn,
        CkError::Pkcs11(_, Function::Decrypt) => VaultError::DecryptFailed,
        other => ck_err(other),
    }
}

fn hash_mechanism(hash: HashAlg) -> (MechanismType, PkcsMgfType) {
    match hash {
        HashAlg::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        HashAlg::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        HashAlg::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
        HashAlg::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
    }
}

/// RFC 8017 §9.2 note 1: the DER DigestInfo prefix for PKCS#1 v1.5 signatures made with plain `CKM_RSA_PKCS`.
fn digest_info_prefix(hash: HashAlg) -> &'static [u8] {
    match hash {
        HashAlg::Sha1 => &[0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14],
        HashAlg::Sha256 => &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ],
        HashAlg::Sha384 => &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04,
            0x30,
        ],
        HashAlg::Sha512 => &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04,
            0x40,
        ],
    }
}

/// Which token a [`Pkcs11Token`] opens: every given field must match (RFC 7512 token attributes).
#[derive(Clone, Debug, Default)]
struct TokenMatch {
    label: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    slot_id: Option<u64>,
}

impl TokenMatch {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.label {
            parts.push(format!("token={v:?}"));
        }
        if let Some(v) = &self.manufacturer {
            parts.push(format!("manufacturer={v:?}"));
        }
        if let Some(v) = &self.serial {
            parts.push(format!("serial={v:?}"));
        }
        if let Some(v) = &self.model {
            parts.push(format!("model={v:?}"));
        }
        if let Some(v) = &self.slot_id {
            parts.push(format!("slot-id={v}"));
        }
        if parts.is_empty() {
            "any token".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Whether the module with this library manufacturer ID drives one serial device, which answers one command at a
/// time: tpm2-pkcs11 (a TPM). Its own CPU work per operation (command marshalling, session HMACs and parameter
/// encryption) is large; several threads in it at once only pile that work up on the host while they queue for the
/// TPM, and measured against a software TPM that took the p99 of the host's other work from about 1.5x to 3-9x.
/// Such a token gets one operation at a time from this process; others (HSMs, SoftHSM2) as many as come.
fn drives_one_device(library_manufacturer: &str) -> bool {
    library_manufacturer.trim().eq_ignore_ascii_case("tpm2-software.github.io")
}

/// The shared state of an open token: its sessions, its login, what it can do.
struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    /// Held only so the login persists while any key of this token is alive.
    anchor: Mutex<Session>,
    idle: Mutex<Vec<Session>>,
    /// From C_GetMechanismList, minus what [`Pkcs11Token::disable_mechanisms`] took out.
    mechanisms: RwLock<Vec<MechanismType>>,
    /// Serializes this process's changes to the token (duplicate-label checks, certificate replacement).
    manage: Mutex<()>,
    /// One operation at a time, for a module that drives one serial device ([`drives_one_device`]).
    one_at_a_time: Option<Mutex<()>>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("label", &self.label).field("slot", &self.slot.id()).finish_non_exhaustive()
    }
}

impl Token {
    fn open_session(&self) -> std::result::Result<Session, CkError> {
        match self.ctx.open_rw_session(self.slot) {
            // A write-protected token still signs; management calls will then fail with a clear CKR.
            Err(CkError::Pkcs11(RvError::TokenWriteProtected, _)) => self.ctx.open_ro_session(self.slot),
            other => other,
        }
    }

    fn has(&self, m: MechanismType) -> bool {
        self.mechanisms.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&m)
    }

    /// Runs `f` on a pooled session. After an error the session is closed, not pooled: some modules leave the
    /// failed operation active, and every later operation on that session would fail with CKR_OPERATION_ACTIVE.
    fn with_session<T, E: From<VaultError>>(
        &self,
        f: impl FnOnce(&Session) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        // Threads beyond the first would only wait for the device inside the module, doing its CPU work meanwhile.
        let _turn = self.one_at_a_time.as_ref().map(lock);
        let pooled = lock(&self.idle).pop();
        let session = match pooled {
            Some(s) => s,
            None => self.open_session().map_err(|e| E::from(ck_err(e)))?,
        };
        let result = f(&session);
        if result.is_ok() {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE_SESSIONS {
                idle.push(session);
            }
        }
        result
    }

    fn login(&self, pin: &[u8]) -> Result<()> {
        let pin = RawAuthPin::new(Box::new(pin.to_vec()));
        let anchor = lock(&self.anchor);
        match anchor.login_with_raw(UserType::User, &pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                // Tokens only say "few left" or "one left", never how many: report 1 when it is the last try.
                let info = self.ctx.get_token_info(self.slot).map_err(ck_err)?;
                if info.user_pin_locked() {
                    Err(VaultError::PinLocked)
                } else {
                    Err(VaultError::WrongPin { attempts_left: u32::from(info.user_pin_final_try()) })
                }
            }
            Err(e) => Err(ck_err(e)),
        }
    }

    fn find_key(&self, s: &Session, selector: &KeySelector) -> Result<ObjectHandle> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        match selector {
            KeySelector::Label(l) => template.push(Attribute::Label(l.as_bytes().to_vec())),
            KeySelector::Id(id) => template.push(Attribute::Id(id.clone())),
        }
        let found = s.find_objects(&template).map_err(ck_err)?;
        match found.as_slice() {
            [] => Err(VaultError::KeyNotFound(format!("{selector} on token {:?}", self.label))),
            [one] => Ok(*one),
            many => Err(VaultError::InvalidInput(format!(
                "{} keys match {selector} on token {:?}; select by id or give the keys unique labels",
                many.len(),
                self.label
            ))),
        }
    }

    fn label_exists(&self, s: &Session, label: &str) -> Result<bool> {
        let found = s
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Label(label.as_bytes().to_vec())])
            .map_err(ck_err)?;
        Ok(!found.is_empty())
    }

    /// Public facts of a private key object; `None` for key types this crate does not use (Ed25519, DSA, ...).
    fn read_key_info(&self, s: &Session, key: ObjectHandle) -> Result<Option<KeyInfo>> {
        let attrs = s
            .get_attributes(
                key,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::KeyType,
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::Local,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcParams,
                    AttributeType::EcPoint,
                ],
            )
            .map_err(ck_err)?;
        let mut a = Attrs::default();
        a.absorb(attrs);
        let id = a.id.clone().unwrap_or_default();
        let label = String::from_utf8_lossy(a.label.as_deref().unwrap_or_default()).into_owned();
        let (algorithm, spki_der) = match a.key_type {
            Some(t) if t == KeyType::RSA => {
                let (modulus, exponent) = match (&a.modulus, &a.exponent) {
                    (Some(n), Some(e)) => (n.clone(), e.clone()),
                    // Some modules keep the public values on the public key object only.
                    _ => match self.public_attrs(s, &id, KeyType::RSA)? {
                        Some(Attrs { modulus: Some(n), exponent: Some(e), .. }) => (n, e),
                        _ => return Ok(None),
                    },
                };
                (KeyAlgorithm::Rsa { bits: der::bit_len(&modulus) }, der::rsa_spki(&modulus, &exponent))
            }
            Some(t) if t == KeyType::EC => {
                let (algorithm, field_len, params) = match a.ec_params.as_deref() {
                    Some(der::P256_PARAMS) => (KeyAlgorithm::EcP256, 32, der::P256_PARAMS),
                    Some(der::P384_PARAMS) => (KeyAlgorithm::EcP384, 48, der::P384_PARAMS),
                    _ => return Ok(None),
                };
                // PKCS#11 private EC keys carry no CKA_EC_POINT; the public half is a separate object.
                let point = match a.ec_point.as_deref().and_then(|p| der::unwrap_ec_point(p, field_len)) {
                    Some(p) => p,
                    None => match self
                        .public_attrs(s, &id, KeyType::EC)?
                        .and_then(|p| p.ec_point)
                        .and_then(|p| der::unwrap_ec_point(&p, field_len))
                    {
                        Some(p) => p,
                        None => return Ok(None),
                    },
                };
                (algorithm, der::ec_spki(params, &point))
            }
            _ => return Ok(None),
        };
        let policy = read_policy(s, &id)?;
        Ok(Some(KeyInfo {
            id,
            label,
            algorithm,
            spki_der,
            made_inside: a.local == Some(true),
            non_exportable: a.extractable == Some(false) && a.sensitive == Some(true),
            policy,
        }))
    }

    fn public_attrs(&self, s: &Session, id: &[u8], key_type: KeyType) -> Result<Option<Attrs>> {
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(key_type),
                Attribute::Id(id.to_vec()),
            ])
            .map_err(ck_err)?;
        let Some(&public) = found.first() else {
            return Ok(None);
        };
        let attrs = s
            .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent, AttributeType::EcPoint])
            .map_err(ck_err)?;
        let mut a = Attrs::default();
        a.absorb(attrs);
        Ok(Some(a))
    }

    fn open_key(self: &Arc<Self>, selector: &KeySelector) -> Result<Arc<Pkcs11Key>> {
        let (handle, info) = self.with_session(|s| {
            let handle = self.find_key(s, selector)?;
            let info = self.read_key_info(s, handle)?.ok_or_else(|| VaultError::Unsupported {
                key: selector.to_string(),
                alg: "any".into(),
                why: "the key is neither RSA nor EC P-256/P-384, or its public half is missing".into(),
            })?;
            Ok::<_, VaultError>((handle, info))
        })?;
        Ok(Arc::new(Pkcs11Key { token: Arc::clone(self), handle, info, oaep_sha256: AtomicU8::new(OAEP_UNKNOWN) }))
    }

    fn find_certs(&self, s: &Session, id: &[u8]) -> Result<Vec<(ObjectHandle, String, Vec<u8>)>> {
        let handles = s
            .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), Attribute::Id(id.to_vec())])
            .map_err(ck_err)?;
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            let mut label = String::new();
            let mut value = Vec::new();
            for attr in s.get_attributes(h, &[AttributeType::Label, AttributeType::Value]).map_err(ck_err)? {
                match attr {
                    Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                    Attribute::Value(v) => value = v,
                    _ => {}
                }
            }
            out.push((h, label, value));
        }
        Ok(out)
    }
}

/// The attributes [`Token::read_key_info`] looks at, picked out of cryptoki's list (which silently omits
/// attributes the object does not have or will not reveal).
#[derive(Default)]
struct Attrs {
    id: Option<Vec<u8>>,
    label: Option<Vec<u8>>,
    key_type: Option<KeyType>,
    extractable: Option<bool>,
    sensitive: Option<bool>,
    local: Option<bool>,
    modulus: Option<Vec<u8>>,
    exponent: Option<Vec<u8>>,
    ec_params: Option<Vec<u8>>,
    ec_point: Option<Vec<u8>>,
}

impl Attrs {
    fn absorb(&mut self, attrs: Vec<Attribute>) {
        for attr in attrs {
            match attr {
                Attribute::Id(v) => self.id = Some(v),
                Attribute::Label(v) => self.label = Some(v),
                Attribute::KeyType(v) => self.key_type = Some(v),
                Attribute::Extractable(v) => self.extractable = Some(v),
                Attribute::Sensitive(v) => self.sensitive = Some(v),
                Attribute::Local(v) => self.local = Some(v),
                Attribute::Modulus(v) if !v.is_empty() => self.modulus = Some(v),
                Attribute::PublicExponent(v) if !v.is_empty() => self.exponent = Some(v),
                Attribute::EcParams(v) => self.ec_params = Some(v),
                Attribute::EcPoint(v) if !v.is_empty() => self.ec_point = Some(v),
                _ => {}
            }
        }
    }
}

fn policy_template(id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Application(POLICY_APPLICATION.to_vec()),
        Attribute::Label(hex::encode(id).into_bytes()),
    ]
}

fn read_policy(s: &Session, id: &[u8]) -> Result<KeyPolicy> {
    let found = s.find_objects(&policy_template(id)).map_err(ck_err)?;
    let Some(&obj) = found.first() else {
        return Ok(KeyPolicy::default());
    };
    for attr in s.get_attributes(obj, &[AttributeType::Value]).map_err(ck_err)? {
        if let Attribute::Value(v) = attr {
            return serde_json::from_slice(&v).map_err(|e| {
                VaultError::Pkcs11(format!("the policy object of key {} is unreadable: {e}", hex::encode(id)))
            });
        }
    }
    Ok(KeyPolicy::default())
}

fn write_policy(s: &Session, id: &[u8], policy: &KeyPolicy) -> Result<()> {
    let old = s.find_objects(&policy_template(id)).map_err(ck_err)?;
    if *policy != KeyPolicy::default() {
        let value = serde_json::to_vec(policy).map_err(|e| VaultError::Crypto(format!("policy encoding: {e}")))?;
        let mut template = policy_template(id);
        template.extend([
            Attribute::Token(true),
            // Private, so that changing it needs the PIN.
            Attribute::Private(true),
            Attribute::Value(value),
        ]);
        s.create_object(&template).map_err(ck_err)?;
    }
    for obj in old {
        s.destroy_object(obj).map_err(ck_err)?;
    }
    Ok(())
}

/// Overwrites secret attribute values before the template is dropped; cryptoki copies them into the call.
fn wipe(template: &mut [Attribute]) {
    for attr in template {
        match attr {
            Attribute::Value(v)
            | Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v) => v.zeroize(),
            _ => {}
        }
    }
}

/// A PKCS#11 token opened and (when a PIN is given) logged in. Cheap to clone; keys keep it open.
#[derive(Clone, Debug)]
pub struct Pkcs11Token {
    inner: Arc<Token>,
}

impl Pkcs11Token {
    /// Opens the token labelled `token_label` in `module` and logs in with `pin` if given.
    pub fn open(module: &Path, token_label: &str, pin: Option<&[u8]>) -> Result<Self> {
        let m = TokenMatch { label: Some(token_label.to_string()), ..Default::default() };
        Self::open_matching(module, &m, pin)
    }

    /// Opens the token a `pkcs11:` URI names (token, manufacturer, serial, model, slot-id), loading `module-path`
    /// (or the module named by the `PKCS11_MODULE` environment variable) and logging in with the URI's PIN source
    /// if it has one. Object attributes are ignored here; see [`Pkcs11Token::key_by_uri`].
    pub fn open_uri(uri: &Pkcs11Uri) -> Result<Self> {
        uri.check_usable()?;
        let module = match &uri.module_path {
            Some(p) => p.clone(),
            None => std::env::var_os(MODULE_ENV).map(PathBuf::from).ok_or_else(|| VaultError::BadUri {
                uri: uri.to_string_redacted(),
                why: format!("no module-path, and {MODULE_ENV} is not set"),
            })?,
        };
        let pin = uri.pin.as_ref().map(|p| p.read()).transpose()?;
        let m = TokenMatch {
            label: uri.token.clone(),
            manufacturer: uri.manufacturer.clone(),
            serial: uri.serial.clone(),
            model: uri.model.clone(),
            slot_id: uri.slot_id,
        };
        Self::open_matching(&module, &m, pin.as_ref().map(|p| p.as_slice()))
    }

    fn open_matching(module: &Path, m: &TokenMatch, pin: Option<&[u8]>) -> Result<Self> {
        let ctx = context(module)?;
        let mut found = Vec::new();
        for slot in ctx.get_slots_with_token().map_err(ck_err)? {
            let info = ctx.get_token_info(slot).map_err(ck_err)?;
            let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have.trim_end());
            if eq(&m.label, info.label())
                && eq(&m.manufacturer, info.manufacturer_id())
                && eq(&m.serial, info.serial_number())
                && eq(&m.model, info.model())
                && m.slot_id.is_none_or(|id| id == slot.id())
            {
                found.push((slot, info.label().trim_end().to_string()));
            }
        }
        let (slot, label) = match found.len() {
            1 => found.remove(0),
            0 => {
                return Err(VaultError::Pkcs11(format!(
                    "no token matches {} in {} (list them with `pkcs11-tool --module {} -L`)",
                    m.describe(),
                    module.display(),
                    module.display()
                )))
            }
            n => {
                return Err(VaultError::Pkcs11(format!(
                    "{n} tokens match {} in {}; name one by token label or serial",
                    m.describe(),
                    module.display()
                )))
            }
        };
        let anchor = match ctx.open_rw_session(slot) {
            Err(CkError::Pkcs11(RvError::TokenWriteProtected, _)) => ctx.open_ro_session(slot),
            other => other,
        }
        .map_err(ck_err)?;
        let mechanisms = ctx.get_mechanism_list(slot).map_err(ck_err)?;
        let library = ctx.get_library_info().map(|i| i.manufacturer_id().to_owned()).unwrap_or_default();
        let one_at_a_time = drives_one_device(&library).then(|| Mutex::new(()));
        let token = Token {
            ctx,
            slot,
            label,
            anchor: Mutex::new(anchor),
            idle: Mutex::new(Vec::new()),
            mechanisms: RwLock::new(mechanisms),
            manage: Mutex::new(()),
            one_at_a_time,
        };
        if let Some(pin) = pin {
            token.login(pin)?;
        }
        tracing::debug!(
            token = %token.label,
            slot = token.slot.id(),
            one_at_a_time = token.one_at_a_time.is_some(),
            "opened PKCS#11 token"
        );
        Ok(Pkcs11Token { inner: Arc::new(token) })
    }

    /// Logs in with the user PIN (for tokens opened without one).
    pub fn login(&self, pin: &[u8]) -> Result<()> {
        self.inner.login(pin)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Whether the token offers `mechanism` (from C_GetMechanismList, read once when opened).
    pub fn has_mechanism(&self, mechanism: MechanismType) -> bool {
        self.inner.has(mechanism)
    }

    /// Stops using `mechanisms` on this token (every key opened from it included), as if the module lacked them:
    /// for a module known to implement one wrongly. The software fallbacks take over where there is one
    /// (DigestInfo over `CKM_RSA_PKCS`, PSS over a digest, padding removal after `CKM_RSA_X_509`).
    pub fn disable_mechanisms(&self, mechanisms: &[MechanismType]) {
        self.inner
            .mechanisms
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|m| !mechanisms.contains(m));
    }

    /// A handle to one key, as the concrete type.
    pub fn open_key(&self, selector: &KeySelector) -> Result<Arc<Pkcs11Key>> {
        self.inner.open_key(selector)
    }

    /// The key a `pkcs11:` URI selects on this token. With both `id` and `object`, both must match.
    /// A `token=` in the URI must name this token.
    pub fn key_by_uri(&self, uri: &Pkcs11Uri) -> Result<Arc<Pkcs11Key>> {
        let selector = uri.key_selector()?;
        if uri.token.as_ref().is_some_and(|t| t != &self.inner.label) {
            return Err(VaultError::BadUri {
                uri: uri.to_string_redacted(),
                why: format!("the URI names another token than {:?}", self.inner.label),
            });
        }
        let key = self.open_key(&selector)?;
        if let Some(label) = &uri.object {
            if &key.info.label != label {
                return Err(VaultError::KeyNotFound(format!(
                    "{selector} with label {label:?} on token {:?}",
                    self.inner.label
                )));
            }
        }
        Ok(key)
    }

    /// Replaces the stored [`KeyPolicy`] of a key. Handles opened before keep the policy they were opened with.
    pub fn set_policy(&self, selector: &KeySelector, policy: &KeyPolicy) -> Result<()> {
        let t = &self.inner;
        let _guard = lock(&t.manage);
        t.with_session(|s| {
            let handle = t.find_key(s, selector)?;
            let id = key_id(s, handle)?;
            write_policy(s, &id, policy)
        })
    }

    fn store_key_pair(
        &self,
        label: &str,
        policy: &KeyPolicy,
        make: impl FnOnce(&Session, Vec<u8>) -> Result<(ObjectHandle, ObjectHandle)>,
    ) -> Result<KeyInfo> {
        if label.is_empty() {
            return Err(VaultError::InvalidInput("a key needs a label".into()));
        }
        let t = &self.inner;
        let _guard = lock(&t.manage);
        t.with_session(|s| {
            if t.label_exists(s, label)? {
                return Err(VaultError::DuplicateLabel(label.to_string()));
            }
            let id = s.generate_random_vec(16).map_err(ck_err)?;
            let (public, private) = make(s, id.clone())?;
            let finish = || -> Result<KeyInfo> {
                write_policy(s, &id, policy)?;
                t.read_key_info(s, private)?
                    .ok_or_else(|| VaultError::Pkcs11("the token did not keep the new key's public values".into()))
            };
            finish().inspect_err(|_| {
                // Leave no half-made key behind.
                let _ = s.destroy_object(private);
                let _ = s.destroy_object(public);
            })
        })
    }
}

fn key_id(s: &Session, key: ObjectHandle) -> Result<Vec<u8>> {
    for attr in s.get_attributes(key, &[AttributeType::Id]).map_err(ck_err)? {
        if let Attribute::Id(id) = attr {
            return Ok(id);
        }
    }
    Ok(Vec::new())
}

fn common_attrs(class: ObjectClass, key_type: KeyType, label: &str, id: &[u8]) -> Vec<Attribute> {
    let private = class == ObjectClass::PRIVATE_KEY;
    let mut t = vec![
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(private),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    if private {
        t.extend([Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Sign(true)]);
        if key_type == KeyType::RSA {
            t.push(Attribute::Decrypt(true));
        }
    } else {
        t.push(Attribute::Verify(true));
        if key_type == KeyType::RSA {
            t.push(Attribute::Encrypt(true));
        }
    }
    t
}

impl KeyStore for Pkcs11Token {
    fn list(&self) -> Result<Vec<KeyInfo>> {
        let t = &self.inner;
        t.with_session(|s| {
            let keys = s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]).map_err(ck_err)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                match t.read_key_info(s, k)? {
                    Some(info) => out.push(info),
                    None => {
                        tracing::debug!(token = %t.label, "skipping a private key of a type certvault does not use")
                    }
                }
            }
            Ok(out)
        })
    }

    fn key(&self, selector: &KeySelector) -> Result<SharedKey> {
        Ok(self.open_key(selector)?)
    }

    fn generate(&self, label: &str, algorithm: KeyAlgorithm, policy: KeyPolicy) -> Result<KeyInfo> {
        self.store_key_pair(label, &policy, |s, id| {
            let (mechanism, mut public, private) = match algorithm {
                KeyAlgorithm::Rsa { bits: bits @ (2048 | 3072 | 4096) } => {
                    let mut public = common_attrs(ObjectClass::PUBLIC_KEY, KeyType::RSA, label, &id);
                    public.push(Attribute::ModulusBits(Ulong::from(u64::from(bits))));
                    public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                    let private = common_attrs(ObjectClass::PRIVATE_KEY, KeyType::RSA, label, &id);
                    (Mechanism::RsaPkcsKeyPairGen, public, private)
                }
                KeyAlgorithm::Rsa { bits } => {
                    return Err(VaultError::InvalidInput(format!(
                        "RSA keys are made with 2048, 3072 or 4096 bits, not {bits}"
                    )))
                }
                KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                    let params = if algorithm == KeyAlgorithm::EcP256 { der::P256_PARAMS } else { der::P384_PARAMS };
                    let mut public = common_attrs(ObjectClass::PUBLIC_KEY, KeyType::EC, label, &id);
                    public.push(Attribute::EcParams(params.to_vec()));
                    let private = common_attrs(ObjectClass::PRIVATE_KEY, KeyType::EC, label, &id);
                    (Mechanism::EccKeyPairGen, public, private)
                }
            };
            // Key generation templates must not name the class or key type on some modules; the mechanism says it.
            public.retain(|a| !matches!(a, Attribute::Class(_) | Attribute::KeyType(_)));
            let private: Vec<Attribute> =
                private.into_iter().filter(|a| !matches!(a, Attribute::Class(_) | Attribute::KeyType(_))).collect();
            s.generate_key_pair(&mechanism, &public, &private).map_err(ck_err)
        })
    }

    fn import_pkcs8(&self, label: &str, pkcs8: Zeroizing<Vec<u8>>, policy: KeyPolicy) -> Result<KeyInfo> {
        let (mut private_tail, public_tail, key_type) = import_templates(&pkcs8)?;
        let result = self.store_key_pair(label, &policy, |s, id| {
            let mut private = common_attrs(ObjectClass::PRIVATE_KEY, key_type, label, &id);
            private.extend(private_tail.iter().cloned());
            let created = s.create_object(&private);
            wipe(&mut private);
            let private = created.map_err(ck_err)?;
            let mut public = common_attrs(ObjectClass::PUBLIC_KEY, key_type, label, &id);
            public.extend(public_tail.iter().cloned());
            match s.create_object(&public) {
                Ok(public) => Ok((public, private)),
                Err(e) => {
                    let _ = s.destroy_object(private);
                    Err(ck_err(e))
                }
            }
        });
        wipe(&mut private_tail);
        result
    }

    fn cert_chain(&self, selector: &KeySelector) -> Result<Vec<Vec<u8>>> {
        let t = &self.inner;
        t.with_session(|s| {
            let handle = t.find_key(s, selector)?;
            let info = t.read_key_info(s, handle)?;
            let (id, label) = match info {
                Some(i) => (i.id, i.label),
                None => return Ok(Vec::new()),
            };
            let certs = t.find_certs(s, &id)?;
            let mut leaf = None;
            let mut rest: Vec<(u32, Vec<u8>)> = Vec::new();
            let single = certs.len() == 1;
            for (_, cert_label, value) in certs {
                if cert_label == label || single {
                    leaf = Some(value);
                } else if let Some(n) = cert_label
                    .strip_prefix(label.as_str())
                    .and_then(|r| r.strip_prefix("#chain"))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    rest.push((n, value));
                }
            }
            let Some(leaf) = leaf else {
                return Ok(Vec::new());
            };
            rest.sort_by_key(|(n, _)| *n);
            let mut chain = vec![leaf];
            chain.extend(rest.into_iter().map(|(_, v)| v));
            Ok(chain)
        })
    }

    fn store_cert_chain(&self, selector: &KeySelector, chain: Vec<Vec<u8>>) -> Result<()> {
        let t = &self.inner;
        let _guard = lock(&t.manage);
        t.with_session(|s| {
            let handle = t.find_key(s, selector)?;
            let info = t.read_key_info(s, handle)?.ok_or_else(|| VaultError::KeyNotFound(selector.to_string()))?;
            check_leaf_matches(&info, &chain)?;
            let old: Vec<ObjectHandle> = t.find_certs(s, &info.id)?.into_iter().map(|(h, _, _)| h).collect();
            // Create the new objects first, so a failure leaves the old chain in place.
            let mut created = Vec::new();
            for (i, der) in chain.iter().enumerate() {
                let label = if i == 0 { info.label.clone() } else { format!("{}#chain{i}", info.label) };
                match s.create_object(&cert_template(&label, &info.id, der)?) {
                    Ok(h) => created.push(h),
                    Err(e) => {
                        for h in created {
                            let _ = s.destroy_object(h);
                        }
                        return Err(ck_err(e));
                    }
                }
            }
            for h in old {
                s.destroy_object(h).map_err(ck_err)?;
            }
            Ok(())
        })
    }
}

fn cert_template(label: &str, id: &[u8], der: &[u8]) -> Result<Vec<Attribute>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| VaultError::InvalidInput(format!("certificate {label:?}: {e}")))?;
    Ok(vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Subject(cert.tbs_certificate.subject.as_raw().to_vec()),
        Attribute::Issuer(cert.tbs_certificate.issuer.as_raw().to_vec()),
        Attribute::SerialNumber(der::uint(cert.tbs_certificate.raw_serial())),
        Attribute::Value(der.to_vec()),
    ])
}

/// Key-type specific attributes for C_CreateObject of a PKCS#8 key: (private extras, public extras, key type).
fn import_templates(pkcs8: &[u8]) -> Result<(Vec<Attribute>, Vec<Attribute>, KeyType)> {
    use rsa::pkcs1::der::Decode;
    let bad = |why: String| VaultError::InvalidInput(format!("PKCS#8 key: {why}"));
    let info = rsa::pkcs8::PrivateKeyInfoRef::try_from(pkcs8).map_err(|e| bad(e.to_string()))?;
    if info.algorithm.oid.as_bytes() == der::RSA_ENCRYPTION_OID {
        let key =
            rsa::pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes()).map_err(|e| bad(e.to_string()))?;
        if key.other_prime_infos.is_some() {
            return Err(bad("multi-prime RSA keys are not supported".into()));
        }
        let n = key.modulus.as_bytes();
        let bits = der::bit_len(n);
        if !(2048..=8192).contains(&bits) {
            return Err(bad(format!("RSA keys of {bits} bits are not supported (2048 to 8192)")));
        }
        let public =
            vec![Attribute::Modulus(n.to_vec()), Attribute::PublicExponent(key.public_exponent.as_bytes().to_vec())];
        let mut private = public.clone();
        private.extend([
            Attribute::PrivateExponent(key.private_exponent.as_bytes().to_vec()),
            Attribute::Prime1(key.prime1.as_bytes().to_vec()),
            Attribute::Prime2(key.prime2.as_bytes().to_vec()),
            Attribute::Exponent1(key.exponent1.as_bytes().to_vec()),
            Attribute::Exponent2(key.exponent2.as_bytes().to_vec()),
            Attribute::Coefficient(key.coefficient.as_bytes().to_vec()),
        ]);
        return Ok((private, public, KeyType::RSA));
    }
    use aws_lc_rs::encoding::AsBigEndian;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    for (alg, params) in
        [(&ECDSA_P256_SHA256_FIXED_SIGNING, der::P256_PARAMS), (&ECDSA_P384_SHA384_FIXED_SIGNING, der::P384_PARAMS)]
    {
        if let Ok(kp) = EcdsaKeyPair::from_pkcs8(alg, pkcs8) {
            let scalar =
                kp.private_key().as_be_bytes().map_err(|_| VaultError::Crypto("EC private key encoding".into()))?;
            let point = kp.public_key().as_ref().to_vec();
            let private = vec![Attribute::EcParams(params.to_vec()), Attribute::Value(scalar.as_ref().to_vec())];
            let public = vec![Attribute::EcParams(params.to_vec()), Attribute::EcPoint(der::tlv(0x04, &point))];
            return Ok((private, public, KeyType::EC));
        }
    }
    Err(bad("not an RSA, P-256 or P-384 private key".into()))
}

const OAEP_UNKNOWN: u8 = 0;
const OAEP_NATIVE: u8 = 1;
const OAEP_SOFTWARE: u8 = 2;

/// Why a native decryption did not produce a plaintext.
enum NativeDecrypt {
    /// The token refused the mechanism or its parameters at C_DecryptInit: use the software fallback.
    Refused,
    /// Anything else, already mapped.
    Failed(VaultError),
}

impl From<VaultError> for NativeDecrypt {
    fn from(e: VaultError) -> Self {
        NativeDecrypt::Failed(e)
    }
}

/// A private key on a PKCS#11 token. The handle holds the token open and logged in.
pub struct Pkcs11Key {
    token: Arc<Token>,
    handle: ObjectHandle,
    info: KeyInfo,
    /// What we learnt about native OAEP-SHA256 on this key: unknown, native works, or the token refuses it.
    oaep_sha256: AtomicU8,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key").field("token", &self.token.label).field("info", &self.info).finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Opens the token and the key a `pkcs11:` URI names, logging in with its PIN source.
    pub fn open_uri(uri: &Pkcs11Uri) -> Result<Arc<Pkcs11Key>> {
        // Check the key part first so a URI without object/id fails before any module is loaded.
        uri.key_selector()?;
        Pkcs11Token::open_uri(uri)?.key_by_uri(uri)
    }

    /// The label of the token holding the key.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// True when OAEP-SHA256 has been found to need the software fallback on this key's token.
    pub fn oaep_sha256_uses_fallback(&self) -> bool {
        self.oaep_sha256.load(Ordering::Relaxed) == OAEP_SOFTWARE
    }

    fn unsupported(&self, alg: impl fmt::Display, why: &str) -> VaultError {
        VaultError::Unsupported {
            key: self.info.label.clone(),
            alg: alg.to_string(),
            why: format!("token {:?} {why}", self.token.label),
        }
    }

    fn token_sign(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.token.with_session(|s| s.sign(mechanism, self.handle, data).map_err(ck_err))
    }

    fn token_decrypt(&self, mechanism: &Mechanism, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.token
            .with_session(|s| s.decrypt(mechanism, self.handle, ciphertext).map(Zeroizing::new).map_err(decrypt_err))
    }

    fn raw_decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if !self.token.has(MechanismType::RSA_X_509) {
            return Err(self.unsupported(alg, "offers neither this padding nor raw RSA (CKM_RSA_X_509)"));
        }
        let em = self.token_decrypt(&Mechanism::RsaX509, ciphertext)?;
        let k = ciphertext.len();
        match alg {
            DecryptAlg::RsaOaepSha1 => crate::oaep::oaep_decode(HashAlg::Sha1, &em, k),
            DecryptAlg::RsaOaepSha256 => crate::oaep::oaep_decode(HashAlg::Sha256, &em, k),
            DecryptAlg::RsaPkcs1v15 => crate::oaep::pkcs1v15_decode(&em, k),
        }
    }

    fn native_oaep(&self, hash: HashAlg, ciphertext: &[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, NativeDecrypt> {
        let (hash_mech, mgf) = hash_mechanism(hash);
        let params = PkcsOaepParams::new(hash_mech, mgf, PkcsOaepSource::empty());
        let mechanism = Mechanism::RsaPkcsOaep(params);
        self.token.with_session(|s| match s.decrypt(&mechanism, self.handle, ciphertext) {
            Ok(p) => Ok(Zeroizing::new(p)),
            Err(CkError::Pkcs11(
                RvError::ArgumentsBad | RvError::MechanismInvalid | RvError::MechanismParamInvalid,
                Function::DecryptInit,
            )) => Err(NativeDecrypt::Refused),
            Err(e) => Err(NativeDecrypt::Failed(decrypt_err(e))),
        })
    }
}

impl VaultKey for Pkcs11Key {
    fn info(&self) -> &KeyInfo {
        &self.info
    }

    fn sign(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>> {
        check_sign(&self.info, alg)?;
        let t = &self.token;
        let hash = alg.hash();
        let (hash_mech, mgf) = hash_mechanism(hash);
        if alg.is_ecdsa() {
            if !t.has(MechanismType::ECDSA) {
                return Err(self.unsupported(alg, "has no CKM_ECDSA"));
            }
            // Hash in software: tokens differ in which CKM_ECDSA_SHAxxx they have, and all take a digest.
            let sig = self.token_sign(&Mechanism::Ecdsa, &hash.digest(msg))?;
            if sig.len() != self.info.algorithm.signature_len() {
                return Err(VaultError::Pkcs11(format!(
                    "C_Sign returned a {}-byte ECDSA signature; expected raw r||s of {} bytes",
                    sig.len(),
                    self.info.algorithm.signature_len()
                )));
            }
            return Ok(sig);
        }
        if alg.is_pss() {
            let params = PkcsPssParams {
                hash_alg: hash_mech,
                mgf,
                s_len: Ulong::try_from(hash.output_len()).map_err(|e| VaultError::Pkcs11(e.to_string()))?,
            };
            let (combined, combined_type) = match hash {
                HashAlg::Sha256 => (Mechanism::Sha256RsaPkcsPss(params), MechanismType::SHA256_RSA_PKCS_PSS),
                HashAlg::Sha384 => (Mechanism::Sha384RsaPkcsPss(params), MechanismType::SHA384_RSA_PKCS_PSS),
                HashAlg::Sha512 => (Mechanism::Sha512RsaPkcsPss(params), MechanismType::SHA512_RSA_PKCS_PSS),
                HashAlg::Sha1 => (Mechanism::Sha1RsaPkcsPss(params), MechanismType::SHA1_RSA_PKCS_PSS),
            };
            if t.has(combined_type) {
                return self.token_sign(&combined, msg);
            }
            if t.has(MechanismType::RSA_PKCS_PSS) {
                return self.token_sign(&Mechanism::RsaPkcsPss(params), &hash.digest(msg));
            }
            return Err(self.unsupported(alg, "has no RSA-PSS mechanism"));
        }
        let (combined, combined_type) = match hash {
            HashAlg::Sha1 => (Mechanism::Sha1RsaPkcs, MechanismType::SHA1_RSA_PKCS),
            HashAlg::Sha256 => (Mechanism::Sha256RsaPkcs, MechanismType::SHA256_RSA_PKCS),
            HashAlg::Sha384 => (Mechanism::Sha384RsaPkcs, MechanismType::SHA384_RSA_PKCS),
            HashAlg::Sha512 => (Mechanism::Sha512RsaPkcs, MechanismType::SHA512_RSA_PKCS),
        };
        if t.has(combined_type) {
            return self.token_sign(&combined, msg);
        }
        if t.has(MechanismType::RSA_PKCS) {
            let mut digest_info = digest_info_prefix(hash).to_vec();
            digest_info.extend_from_slice(&hash.digest(msg));
            return self.token_sign(&Mechanism::RsaPkcs, &digest_info);
        }
        Err(self.unsupported(alg, "has no RSA PKCS#1 v1.5 mechanism"))
    }

    fn decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_decrypt(&self.info, alg, ciphertext)?;
        let has_oaep = self.token.has(MechanismType::RSA_PKCS_OAEP);
        match alg {
            DecryptAlg::RsaOaepSha1 if has_oaep => match self.native_oaep(HashAlg::Sha1, ciphertext) {
                Ok(p) => Ok(p),
                Err(NativeDecrypt::Refused) => self.raw_decrypt(alg, ciphertext),
                Err(NativeDecrypt::Failed(e)) => Err(e),
            },
            DecryptAlg::RsaOaepSha256 if has_oaep && self.oaep_sha256.load(Ordering::Relaxed) != OAEP_SOFTWARE => {
                match self.native_oaep(HashAlg::Sha256, ciphertext) {
                    Ok(p) => {
                        self.oaep_sha256.store(OAEP_NATIVE, Ordering::Relaxed);
                        Ok(p)
                    }
                    // SoftHSM2 2.6 refuses OAEP with SHA-256 at C_DecryptInit (CKR_ARGUMENTS_BAD); remember that
                    // so later calls go straight to the fallback.
                    Err(NativeDecrypt::Refused) => {
                        self.oaep_sha256.store(OAEP_SOFTWARE, Ordering::Relaxed);
                        tracing::debug!(token = %self.token.label, "native OAEP-SHA256 refused; decoding in software");
                        self.raw_decrypt(alg, ciphertext)
                    }
                    Err(NativeDecrypt::Failed(e)) => Err(e),
                }
            }
            DecryptAlg::RsaPkcs1v15 if self.token.has(MechanismType::RSA_PKCS) => {
                self.token_decrypt(&Mechanism::RsaPkcs, ciphertext)
            }
            _ => self.raw_decrypt(alg, ciphertext),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_module_that_drives_one_tpm_gets_one_operation_at_a_time() {
        // C_GetInfo's manufacturerID comes blank-padded to 32 bytes.
        assert!(super::drives_one_device("tpm2-software.github.io         "));
        assert!(!super::drives_one_device("SoftHSM                         "));
        assert!(!super::drives_one_device(""));
    }

    use super::*;

    #[test]
    fn error_names_follow_the_specification() {
        assert_eq!(ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(&RvError::UserAlreadyLoggedIn), "CKR_USER_ALREADY_LOGGED_IN");
        let e = ck_err(CkError::Pkcs11(RvError::ArgumentsBad, Function::DecryptInit));
        assert_eq!(e.to_string(), "PKCS#11: C_DecryptInit failed with CKR_ARGUMENTS_BAD");
        assert!(matches!(ck_err(CkError::Pkcs11(RvError::PinLocked, Function::Login)), VaultError::PinLocked));
        assert!(matches!(
            decrypt_err(CkError::Pkcs11(RvError::EncryptedDataInvalid, Function::Decrypt)),
            VaultError::DecryptFailed
        ));
        assert!(matches!(
            decrypt_err(CkError::Pkcs11(RvError::UserNotLoggedIn, Function::Decrypt)),
            VaultError::NotLoggedIn
        ));
    }

    #[test]
    fn digest_info_prefixes_announce_the_digest_length() {
        for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            let p = digest_info_prefix(hash);
            assert_eq!(p[1] as usize, p.len() - 2 + hash.output_len());
            assert_eq!(p[p.len() - 1] as usize, hash.output_len());
        }
    }
}
