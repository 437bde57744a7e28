//! A PKCS#11 token as a provisioning device: the same request/apply as a vaultd container, with the token as the
//! vault. Sealed keys are imported with `C_UnwrapKey` (RSA-OAEP to an AES session key, then AES key wrap with
//! padding to a sensitive, non-extractable token key), so the private key is never in clear outside the token.
//!
//! The counter, the outstanding nonce, the pinned central certificate and the transport key's OAEP hash live in one
//! private CKO_DATA object (application `certvault provisioning`, value JSON). A token has no transactions:
//! everything is verified and every sealed key unwrapped before anything visible changes, the state object is
//! written last, and objects made by a failed apply are destroyed.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{ck_err, common_attrs, der, hash_mechanism, lock, Pkcs11Token, Token};
use crate::error::{Result, VaultError};
use crate::key::{HashAlg, KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector};
use crate::protocol::{ApplyReport, DeviceState, RequestContext};
use crate::provision::{self, seal, Expected, OaepHash, Thumbprint, DEVICE_KEY_LABEL, TRANSPORT_KEY_LABEL};
use crate::store::{check_leaf_matches, KeyStore};

/// CKA_APPLICATION of the provisioning state object.
const STATE_APPLICATION: &[u8] = b"certvault provisioning";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    counter: u64,
    #[serde(default)]
    pending_nonce: Option<ByteBuf>,
    #[serde(default)]
    central_cert: Option<ByteBuf>,
    #[serde(default)]
    transport_oaep: OaepHash,
}

fn state_template() -> Vec<Attribute> {
    vec![Attribute::Class(ObjectClass::DATA), Attribute::Application(STATE_APPLICATION.to_vec())]
}

fn read_state(s: &Session) -> Result<State> {
    let found = s.find_objects(&state_template()).map_err(ck_err)?;
    let Some(&obj) = found.first() else {
        return Ok(State::default());
    };
    for attr in s.get_attributes(obj, &[AttributeType::Value]).map_err(ck_err)? {
        if let Attribute::Value(v) = attr {
            return serde_json::from_slice(&v)
                .map_err(|e| VaultError::Pkcs11(format!("the provisioning state object is unreadable: {e}")));
        }
    }
    Ok(State::default())
}

/// Replaces the state object: the new one is made before the old one goes, so a failure keeps a state.
fn write_state(s: &Session, state: &State) -> Result<()> {
    let old = s.find_objects(&state_template()).map_err(ck_err)?;
    let value = serde_json::to_vec(state).map_err(|e| VaultError::Crypto(format!("state encoding: {e}")))?;
    let mut template = state_template();
    template.extend([
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(b"certvault:state".to_vec()),
        Attribute::Value(value),
    ]);
    s.create_object(&template).map_err(ck_err)?;
    for obj in old {
        s.destroy_object(obj).map_err(ck_err)?;
    }
    Ok(())
}

fn oaep_mechanism(oaep: OaepHash) -> Mechanism<'static> {
    let hash = if oaep == OaepHash::Sha1 { HashAlg::Sha1 } else { HashAlg::Sha256 };
    let (h, mgf) = hash_mechanism(hash);
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(h, mgf, PkcsOaepSource::empty()))
}

/// Template of the AES session key a sealed key's content key is unwrapped into: usable only to unwrap.
fn aes_session_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ]
}

impl Token {
    fn info_by_label(&self, s: &Session, label: &str) -> Result<Option<KeyInfo>> {
        match self.find_key(s, &KeySelector::Label(label.into())) {
            Ok(h) => self.read_key_info(s, h),
            Err(VaultError::KeyNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn serial(&self) -> Result<String> {
        let info = self.ctx.get_token_info(self.slot).map_err(ck_err)?;
        let serial = info.serial_number().trim();
        Ok(if serial.is_empty() { format!("pkcs11-{}", self.label) } else { serial.to_string() })
    }

    fn device_state(&self, s: &Session) -> Result<DeviceState> {
        let st = read_state(s)?;
        Ok(DeviceState {
            serial: self.serial()?,
            counter: st.counter,
            device_key: self.info_by_label(s, DEVICE_KEY_LABEL)?,
            transport_key: self.info_by_label(s, TRANSPORT_KEY_LABEL)?,
            pending_request: st.pending_nonce.is_some(),
            central_cert: st.central_cert,
        })
    }

    /// Which OAEP hash `C_UnwrapKey` accepts with the transport key: SHA-256 where the token can, else SHA-1.
    /// Probed with a real unwrap of a random AES key encrypted to the transport key.
    fn probe_oaep(&self, s: &Session, transport: ObjectHandle, spki: &[u8]) -> Result<OaepHash> {
        let mut probe = [0u8; 32];
        aws_lc_rs::rand::fill(&mut probe).map_err(|_| VaultError::Crypto("no randomness".into()))?;
        let public = crate::PublicKey::from_spki(spki)?;
        let ct = public.encrypt(crate::DecryptAlg::RsaOaepSha256, &probe)?;
        match s.unwrap_key(&oaep_mechanism(OaepHash::Sha256), transport, &ct, &aes_session_template()) {
            Ok(h) => {
                let _ = s.destroy_object(h);
                Ok(OaepHash::Sha256)
            }
            Err(CkError::Pkcs11(RvError::ArgumentsBad | RvError::MechanismParamInvalid, _)) => Ok(OaepHash::Sha1),
            Err(e) => Err(ck_err(e)),
        }
    }
}

/// What one update item becomes on the token before it is committed.
enum Staged {
    Existing { info: KeyInfo, chain: Vec<Vec<u8>> },
    Imported { private: ObjectHandle, public: ObjectHandle, info: KeyInfo, chain: Vec<Vec<u8>> },
}

impl Pkcs11Token {
    /// Makes the device identity key and the transport key (RSA-2048: unwrap only, no decrypt, no sign) on the
    /// token if missing, and records which OAEP hash the token unwraps with.
    pub fn device_init(&self) -> Result<DeviceState> {
        let t = &self.inner;
        let existing = t.with_session(|s| t.device_state(s))?;
        if existing.transport_key.as_ref().is_some_and(|k| !k.policy.unwrap_only) {
            return Err(VaultError::InvalidInput(format!(
                "token {:?} has a key labelled {TRANSPORT_KEY_LABEL:?} that was not made by `device init` (it is not \
                 unwrap-only); delete it and run `certvault device init` again",
                t.label
            )));
        }
        if existing.device_key.is_none() {
            self.generate(DEVICE_KEY_LABEL, KeyAlgorithm::EcP256, KeyPolicy::default())?;
        }
        if existing.transport_key.is_none() {
            let policy = KeyPolicy { unwrap_only: true, ..KeyPolicy::default() };
            self.store_key_pair(TRANSPORT_KEY_LABEL, &policy, |s, id| {
                let mut public = common_attrs(ObjectClass::PUBLIC_KEY, KeyType::RSA, TRANSPORT_KEY_LABEL, &id);
                public.retain(|a| !matches!(a, Attribute::Class(_) | Attribute::KeyType(_) | Attribute::Verify(_)));
                public.extend([
                    Attribute::ModulusBits(Ulong::from(2048u64)),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Wrap(true),
                ]);
                let mut private = common_attrs(ObjectClass::PRIVATE_KEY, KeyType::RSA, TRANSPORT_KEY_LABEL, &id);
                private.retain(|a| {
                    !matches!(
                        a,
                        Attribute::Class(_) | Attribute::KeyType(_) | Attribute::Sign(_) | Attribute::Decrypt(_)
                    )
                });
                private.extend([Attribute::Sign(false), Attribute::Decrypt(false), Attribute::Unwrap(true)]);
                s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private).map_err(ck_err)
            })?;
        }
        let _guard = lock(&t.manage);
        t.with_session(|s| {
            let mut st = read_state(s)?;
            let transport = t.find_key(s, &KeySelector::Label(TRANSPORT_KEY_LABEL.into()))?;
            let info = t
                .read_key_info(s, transport)?
                .ok_or_else(|| VaultError::Pkcs11("the transport key has no readable public half".into()))?;
            st.transport_oaep = t.probe_oaep(s, transport, &info.spki_der)?;
            write_state(s, &st)?;
            t.device_state(s)
        })
    }

    /// The device's keys, counter, outstanding request and pinned central.
    pub fn device_info(&self) -> Result<DeviceState> {
        let t = &self.inner;
        t.with_session(|s| t.device_state(s))
    }

    /// Pins the central's certificate. On a token this needs the user PIN only: its SO PIN cannot be checked
    /// while the user is logged in.
    pub fn trust_central(&self, cert: &[u8]) -> Result<()> {
        crate::PublicKey::from_certificate(cert)?;
        let t = &self.inner;
        let _guard = lock(&t.manage);
        t.with_session(|s| {
            let mut st = read_state(s)?;
            st.central_cert = Some(ByteBuf::from(cert.to_vec()));
            write_state(s, &st)
        })
    }

    /// Makes a fresh nonce and remembers it as the outstanding request.
    pub fn begin_request(&self) -> Result<(RequestContext, OaepHash)> {
        let t = &self.inner;
        let _guard = lock(&t.manage);
        let nonce = provision::fresh_nonce().map_err(VaultError::from)?;
        t.with_session(|s| {
            let d = t.device_state(s)?;
            let (Some(device), Some(transport)) = (d.device_key, d.transport_key) else {
                return Err(VaultError::InvalidInput(format!(
                    "token {} has no device identity yet: run `certvault device init` first",
                    t.label
                )));
            };
            let mut st = read_state(s)?;
            st.pending_nonce = Some(ByteBuf::from(nonce.to_vec()));
            write_state(s, &st)?;
            let ctx = RequestContext {
                serial: d.serial,
                counter: st.counter,
                nonce: ByteBuf::from(nonce.to_vec()),
                device_key: ByteBuf::from(device.spki_der),
                transport_key: ByteBuf::from(transport.spki_der),
                transport_oaep: st.transport_oaep,
            };
            Ok((ctx, st.transport_oaep))
        })
    }

    /// Verifies an update and imports it: sealed keys with `C_UnwrapKey`, chains as certificate objects, then the
    /// new counter. A refused update changes nothing on the token.
    pub fn apply_update(&self, der_update: &[u8]) -> Result<ApplyReport> {
        let t = &self.inner;
        let (update, staged) = t.with_session(|s| {
            let st = read_state(s)?;
            let central = st.central_cert.as_ref().ok_or_else(|| {
                VaultError::InvalidInput(
                    "no central is trusted yet: pin its certificate with `certvault device trust-central`".into(),
                )
            })?;
            let serial = t.serial()?;
            let pending = st.pending_nonce.as_ref().map(|n| n.to_vec()).unwrap_or_default();
            let expected = Expected { serial: &serial, nonce: &pending, counter: st.counter.saturating_add(1) };
            let update = provision::verify_update(der_update, central, &expected)?;
            let transport = t.find_key(s, &KeySelector::Label(TRANSPORT_KEY_LABEL.into()))?;
            let transport_info = t
                .read_key_info(s, transport)?
                .ok_or_else(|| VaultError::Pkcs11("the transport key has no readable public half".into()))?;
            let mut staged: Vec<Staged> = Vec::new();
            let result = (|| {
                for item in &update.items {
                    let bad = |why: String| VaultError::InvalidInput(format!("update item {:?}: {why}", item.label));
                    match &item.sealed_key {
                        Some(sealed) => {
                            let parts = seal::parse(sealed).map_err(|e| bad(e.to_string()))?;
                            seal::check_recipient(&parts, &transport_info.spki_der).map_err(|e| bad(e.to_string()))?;
                            let (private, public, info) = unwrap_into_token(t, s, transport, &parts, item)?;
                            staged.push(Staged::Imported { private, public, info, chain: item.chain.clone() });
                        }
                        None => {
                            let info = t.info_by_label(s, &item.label)?.ok_or_else(|| {
                                bad("no key with this label is on the token, and the update brings none".into())
                            })?;
                            check_leaf_matches(&info, &item.chain).map_err(|e| bad(e.to_string()))?;
                            staged.push(Staged::Existing { info, chain: item.chain.clone() });
                        }
                    }
                }
                Ok::<_, VaultError>(())
            })();
            if let Err(e) = result {
                discard(s, &staged);
                return Err(e);
            }
            Ok((update, staged))
        })?;
        self.commit(update, staged)
    }

    fn commit(&self, update: provision::Update, staged: Vec<Staged>) -> Result<ApplyReport> {
        let t = &self.inner;
        let mut certificates = Vec::new();
        let mut imported = Vec::new();
        let mut replaced = Vec::new();
        let result = (|| {
            for st in &staged {
                let (info, chain) = match st {
                    Staged::Existing { info, chain } => (info, chain),
                    Staged::Imported { info, chain, .. } => (info, chain),
                };
                self.store_cert_chain(&KeySelector::Id(info.id.clone()), chain.clone())?;
                certificates.push(Thumbprint { label: info.label.clone(), sha256: provision::thumbprint(&chain[0]) });
                if matches!(st, Staged::Imported { .. }) {
                    imported.push(info.label.clone());
                    replaced.push((info.label.clone(), info.id.clone()));
                }
            }
            let _guard = lock(&t.manage);
            t.with_session(|s| {
                let mut state = read_state(s)?;
                state.counter = update.counter;
                state.pending_nonce = None;
                write_state(s, &state)
            })
        })();
        if let Err(e) = result {
            let _ = t.with_session(|s| {
                discard(s, &staged);
                Ok::<_, VaultError>(())
            });
            return Err(e);
        }
        // A central-made key replaces the older key of its label (rotation); done after the counter moved, so a
        // failure here leaves an extra old key, never a missing new one.
        t.with_session(|s| {
            for (label, id) in &replaced {
                remove_older(t, s, label, id)?;
            }
            Ok::<_, VaultError>(())
        })?;
        Ok(ApplyReport {
            serial: update.serial,
            counter: update.counter,
            nonce: ByteBuf::from(update.nonce),
            certificates,
            imported_keys: imported,
        })
    }
}

/// Two `C_UnwrapKey` calls: the content key into an AES session key, the PKCS#8 key into a token key; then the
/// public key object from the leaf certificate, and a check that the pair matches it.
pub(super) fn unwrap_into_token(
    t: &Token,
    s: &Session,
    transport: ObjectHandle,
    parts: &seal::SealedParts,
    item: &provision::UpdateItem,
) -> Result<(ObjectHandle, ObjectHandle, KeyInfo)> {
    use x509_parser::prelude::FromDer;
    let leaf = crate::PublicKey::from_certificate(item.chain.first().map(Vec::as_slice).unwrap_or_default())?;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(leaf.spki_der())
        .map_err(|e| VaultError::InvalidInput(format!("leaf public key: {e}")))?;
    let (key_type, public_tail) = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => (
            KeyType::RSA,
            vec![Attribute::Modulus(rsa.modulus.to_vec()), Attribute::PublicExponent(rsa.exponent.to_vec())],
        ),
        Ok(x509_parser::public_key::PublicKey::EC(point)) => {
            let params = match leaf.algorithm() {
                KeyAlgorithm::EcP256 => der::P256_PARAMS,
                KeyAlgorithm::EcP384 => der::P384_PARAMS,
                other => return Err(VaultError::InvalidInput(format!("unexpected {other} leaf key"))),
            };
            (KeyType::EC, vec![Attribute::EcParams(params.to_vec()), Attribute::EcPoint(der::tlv(0x04, point.data()))])
        }
        _ => return Err(VaultError::InvalidInput("the leaf key is neither RSA nor EC".into())),
    };
    let id = s.generate_random_vec(16).map_err(ck_err)?;
    let aes = s
        .unwrap_key(&oaep_mechanism(parts.oaep), transport, &parts.encrypted_key, &aes_session_template())
        .map_err(|e| {
            VaultError::InvalidInput(format!(
                "update item {:?}: the token could not unwrap the content key: {e}",
                item.label
            ))
        })?;
    // The curve and the key values come from the PKCS#8 inside; the template may not set them (CKR_ATTRIBUTE_READ_ONLY).
    let private_t = common_attrs(ObjectClass::PRIVATE_KEY, key_type, &item.label, &id);
    let private = s.unwrap_key(&Mechanism::AesKeyWrapPad, aes, &parts.wrapped, &private_t);
    let _ = s.destroy_object(aes);
    let private = private.map_err(|e| {
        VaultError::InvalidInput(format!(
            "update item {:?}: the token could not unwrap the private key (is it the key of the item's certificate?): {e}",
            item.label
        ))
    })?;
    let mut public_t = common_attrs(ObjectClass::PUBLIC_KEY, key_type, &item.label, &id);
    public_t.extend(public_tail);
    let public = match s.create_object(&public_t) {
        Ok(h) => h,
        Err(e) => {
            let _ = s.destroy_object(private);
            return Err(ck_err(e));
        }
    };
    let checked = t.read_key_info(s, private).and_then(|info| {
        let info = info.ok_or_else(|| VaultError::Pkcs11("the unwrapped key has no readable public half".into()))?;
        check_leaf_matches(&info, &item.chain)?;
        Ok(info)
    });
    match checked {
        Ok(info) => Ok((private, public, info)),
        Err(e) => {
            let _ = s.destroy_object(private);
            let _ = s.destroy_object(public);
            Err(VaultError::InvalidInput(format!("update item {:?}: {e}", item.label)))
        }
    }
}

/// Destroys the objects a failed apply made.
fn discard(s: &Session, staged: &[Staged]) {
    for st in staged {
        if let Staged::Imported { private, public, info, .. } = st {
            let _ = s.destroy_object(*private);
            let _ = s.destroy_object(*public);
            if let Ok(certs) =
                s.find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), Attribute::Id(info.id.clone())])
            {
                for c in certs {
                    let _ = s.destroy_object(c);
                }
            }
        }
    }
}

/// Removes the keys (and their certificates) labelled `label` other than the one with `keep_id`.
fn remove_older(t: &Token, s: &Session, label: &str, keep_id: &[u8]) -> Result<()> {
    let _ = t;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for h in
            s.find_objects(&[Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())]).map_err(ck_err)?
        {
            let id = super::key_id(s, h)?;
            if id != keep_id {
                for c in s
                    .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), Attribute::Id(id.clone())])
                    .map_err(ck_err)?
                {
                    s.destroy_object(c).map_err(ck_err)?;
                }
                s.destroy_object(h).map_err(ck_err)?;
            }
        }
    }
    Ok(())
}
