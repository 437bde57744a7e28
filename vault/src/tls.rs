//! rustls over vault keys: a [`SigningKey`] whose private half stays in the vault, certificate resolvers that swap
//! atomically on renewal, and builders for mutual-TLS configurations.
//!
//! No `PrivateKeyDer` appears anywhere here: rustls only ever sees a [`VaultSigningKey`], which forwards the
//! to-be-signed bytes to [`crate::VaultKey::sign_der`].
//!
//! # Signing is synchronous
//! rustls 0.23 has no asynchronous signer, so [`Signer::sign`] runs on whatever thread drives the handshake (a tokio
//! worker under tokio-rustls) and blocks it for one vault round trip. That is fine for a software key, SoftHSM or
//! vaultd on the same host (well under a millisecond), but a USB dongle or a TPM can take 5 to 100+ ms. Callers with
//! slow vaults should drive handshakes on blocking threads (`spawn_blocking`), a dedicated runtime, or cap the
//! number of concurrent handshakes to the number of vault sessions.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use certvault::tls::{default_provider, server_config, SwappableCertifiedKey};
//! # fn demo(key: certvault::SharedKey, chain: Vec<rustls::pki_types::CertificateDer<'static>>,
//! #         client_roots: rustls::RootCertStore) -> Result<(), certvault::VaultError> {
//! let resolver = Arc::new(SwappableCertifiedKey::new(chain, key)?);
//! let config = server_config(default_provider(), resolver.clone(), client_roots, rustls::ALL_VERSIONS)?;
//! // ... serve with tokio_rustls::TlsAcceptor::from(Arc::new(config)); later, after a renewal:
//! // resolver.replace(new_chain, new_key)?;   // the next handshake uses the new certificate
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SignatureAlgorithm, SignatureScheme, SupportedProtocolVersion,
};

use crate::error::{Result, VaultError};
use crate::key::{KeyAlgorithm, SharedKey, SignAlg};

/// RSA schemes in preference order. PSS comes first even for TLS 1.2: TLS 1.3 allows nothing else for handshake
/// signatures, and PKCS#1 v1.5 is kept only for TLS 1.2 peers that offer no PSS at all.
const RSA_PSS: [SignatureScheme; 3] =
    [SignatureScheme::RSA_PSS_SHA256, SignatureScheme::RSA_PSS_SHA384, SignatureScheme::RSA_PSS_SHA512];
const RSA_PKCS1: [SignatureScheme; 3] =
    [SignatureScheme::RSA_PKCS1_SHA256, SignatureScheme::RSA_PKCS1_SHA384, SignatureScheme::RSA_PKCS1_SHA512];

/// The vault algorithm that makes a TLS signature of `scheme`, if we support it.
pub fn sign_alg_for(scheme: SignatureScheme) -> Option<SignAlg> {
    Some(match scheme {
        SignatureScheme::RSA_PSS_SHA256 => SignAlg::RsaPssSha256,
        SignatureScheme::RSA_PSS_SHA384 => SignAlg::RsaPssSha384,
        SignatureScheme::RSA_PSS_SHA512 => SignAlg::RsaPssSha512,
        SignatureScheme::RSA_PKCS1_SHA256 => SignAlg::RsaPkcs1Sha256,
        SignatureScheme::RSA_PKCS1_SHA384 => SignAlg::RsaPkcs1Sha384,
        SignatureScheme::RSA_PKCS1_SHA512 => SignAlg::RsaPkcs1Sha512,
        SignatureScheme::ECDSA_NISTP256_SHA256 => SignAlg::EcdsaP256Sha256,
        SignatureScheme::ECDSA_NISTP384_SHA384 => SignAlg::EcdsaP384Sha384,
        _ => return None,
    })
}

/// Picks the scheme a key of `alg` signs with, from what the peer `offered`.
///
/// For RSA keys PSS always wins when offered (SHA-256 first: cheapest, and what every peer accepts); PKCS#1 v1.5 is
/// chosen only when the peer offers no PSS scheme at all, which can happen in TLS 1.2 but never in TLS 1.3, whose
/// `signature_algorithms` never lists PKCS#1 for handshake signatures. ECDSA keys sign only with the hash their
/// curve is paired with in TLS 1.3, so a P-256 key never answers an offer of P-384 only.
pub fn choose_scheme_for(alg: KeyAlgorithm, offered: &[SignatureScheme]) -> Option<SignatureScheme> {
    let first_offered = |prefs: &[SignatureScheme]| prefs.iter().copied().find(|s| offered.contains(s));
    match alg {
        KeyAlgorithm::Rsa { .. } => first_offered(&RSA_PSS).or_else(|| first_offered(&RSA_PKCS1)),
        KeyAlgorithm::EcP256 => first_offered(&[SignatureScheme::ECDSA_NISTP256_SHA256]),
        KeyAlgorithm::EcP384 => first_offered(&[SignatureScheme::ECDSA_NISTP384_SHA384]),
    }
}

/// A vault key as a rustls [`SigningKey`]: the handshake signature is made by the vault, and the private key never
/// enters this process.
///
/// ```
/// use std::sync::Arc;
/// use certvault::soft::{generate_pkcs8, SoftKey};
/// use certvault::tls::VaultSigningKey;
/// use certvault::{KeyAlgorithm, KeyPolicy, SharedKey};
/// use rustls::sign::SigningKey;
/// use rustls::SignatureScheme;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pkcs8 = generate_pkcs8(KeyAlgorithm::EcP256)?;
/// let key: SharedKey = Arc::new(SoftKey::from_pkcs8(pkcs8, vec![1], "tls".into(), true, KeyPolicy::default())?);
/// let signing = VaultSigningKey::new(key);
/// let signer = signing.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256]).ok_or("no scheme")?;
/// let der_signature = signer.sign(b"to be signed")?;
/// assert_eq!(der_signature[0], 0x30); // TLS wants ECDSA signatures DER-encoded
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VaultSigningKey {
    key: SharedKey,
}

impl VaultSigningKey {
    /// Wraps `key`.
    pub fn new(key: SharedKey) -> Self {
        VaultSigningKey { key }
    }

    /// The vault key behind this signing key.
    pub fn key(&self) -> &SharedKey {
        &self.key
    }
}

impl fmt::Debug for VaultSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.key.info();
        f.debug_struct("VaultSigningKey").field("label", &info.label).field("algorithm", &info.algorithm).finish()
    }
}

impl SigningKey for VaultSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = choose_scheme_for(self.key.info().algorithm, offered)?;
        let alg = sign_alg_for(scheme)?;
        Some(Box::new(VaultSigner { key: self.key.clone(), scheme, alg }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key.info().spki_der.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.info().algorithm {
            KeyAlgorithm::Rsa { .. } => SignatureAlgorithm::RSA,
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => SignatureAlgorithm::ECDSA,
        }
    }
}

/// One handshake's signer, bound to the scheme chosen for it.
struct VaultSigner {
    key: SharedKey,
    scheme: SignatureScheme,
    alg: SignAlg,
}

impl fmt::Debug for VaultSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSigner").field("label", &self.key.info().label).field("scheme", &self.scheme).finish()
    }
}

impl Signer for VaultSigner {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        // DER because TLS carries ECDSA signatures as DER, unlike OPC UA's raw r||s.
        self.key.sign_der(self.alg, message).map_err(|e| {
            tracing::warn!(key = %self.key.info().label, scheme = ?self.scheme, error = %e, "vault refused a TLS signature");
            rustls::Error::General(format!("vault key {:?} could not sign ({}): {e}", self.key.info().label, self.alg))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Pairs `chain` (leaf first) with a vault key and checks that the leaf certifies that key.
pub fn certified_key(chain: Vec<CertificateDer<'static>>, key: SharedKey) -> Result<Arc<CertifiedKey>> {
    let label = key.info().label.clone();
    let ck = CertifiedKey::new(chain, Arc::new(VaultSigningKey::new(key)));
    // Without this check a wrong pairing only shows up as a peer's "bad signature" alert, far from its cause.
    ck.keys_match().map_err(|e| {
        VaultError::InvalidInput(format!("the certificate chain does not belong to vault key {label:?}: {e}"))
    })?;
    Ok(Arc::new(ck))
}

/// The current certificate chain and vault key of a TLS endpoint, replaceable while connections are running.
///
/// Every handshake takes the pair that is current when it starts and keeps it to the end, so a [`replace`] never
/// mixes an old certificate with a new key. Use it as the server's certificate resolver and as the client's
/// client-certificate resolver.
///
/// ```no_run
/// use std::sync::Arc;
/// use certvault::tls::SwappableCertifiedKey;
/// # fn demo(key: certvault::SharedKey, chain: Vec<rustls::pki_types::CertificateDer<'static>>,
/// #         renewed_key: certvault::SharedKey, renewed_chain: Vec<rustls::pki_types::CertificateDer<'static>>)
/// #         -> Result<(), certvault::VaultError> {
/// let resolver = Arc::new(SwappableCertifiedKey::new(chain, key)?);
/// // hand `resolver.clone()` to `server_config` / `client_config`, then, after a renewal:
/// resolver.replace(renewed_chain, renewed_key)?; // refused (old pair kept) if they do not match
/// # Ok(()) }
/// ```
///
/// [`replace`]: SwappableCertifiedKey::replace
pub struct SwappableCertifiedKey {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCertifiedKey {
    /// Starts with `chain` (leaf first) and `key`; fails if the leaf does not certify the key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: SharedKey) -> Result<Self> {
        Ok(SwappableCertifiedKey { current: RwLock::new(certified_key(chain, key)?) })
    }

    /// Makes `chain` and `key` current for every later handshake. A pair that does not match is refused and the
    /// previous one stays in place.
    pub fn replace(&self, chain: Vec<CertificateDer<'static>>, key: SharedKey) -> Result<()> {
        let ck = certified_key(chain, key)?;
        // The lock only guards an Arc swap, which cannot be left half-done, so a poisoned lock is still consistent.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = ck;
        Ok(())
    }

    /// The pair in use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Debug for SwappableCertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ck = self.current();
        f.debug_struct("SwappableCertifiedKey").field("chain_len", &ck.cert.len()).field("key", &ck.key).finish()
    }
}

impl ResolvesServerCert for SwappableCertifiedKey {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for SwappableCertifiedKey {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let ck = self.current();
        // Offering a certificate we then cannot sign for would abort the handshake; sending none at least lets a
        // server with optional client authentication continue, and gives a clear "certificate required" otherwise.
        ck.key.choose_scheme(sigschemes).is_some().then_some(ck)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls's *ring* provider. Both ring and aws-lc-rs are in this crate's dependency graph, so rustls cannot pick a
/// process default on its own: pass this (or another provider) explicitly.
pub fn default_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_err(e: impl fmt::Display) -> VaultError {
    VaultError::InvalidInput(format!("TLS configuration: {e}"))
}

/// A server configuration that presents the certificate of `resolver` and requires a client certificate that
/// chains to `client_roots`.
///
/// Session resumption keeps rustls's defaults; resumed handshakes do not touch the vault.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<SwappableCertifiedKey>,
    client_roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
        .build()
        .map_err(config_err)?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver))
}

/// A client configuration that trusts servers chaining to `roots` and authenticates with the certificate of
/// `resolver`.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    roots: RootCertStore,
    resolver: Arc<SwappableCertifiedKey>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(config_err)?
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::csr::{self, CsrRequest};
    use crate::key::KeyPolicy;
    use crate::soft::{generate_pkcs8, SoftKey};

    fn soft(alg: KeyAlgorithm, label: &str) -> SharedKey {
        let pkcs8 = generate_pkcs8(alg).expect("keygen");
        Arc::new(
            SoftKey::from_pkcs8(pkcs8, label.as_bytes().to_vec(), label.into(), true, KeyPolicy::default())
                .expect("load"),
        )
    }

    fn self_signed(key: &SharedKey) -> Vec<CertificateDer<'static>> {
        let req = CsrRequest {
            common_name: key.info().label.clone(),
            dns_names: vec!["localhost".into()],
            ..Default::default()
        };
        vec![CertificateDer::from(csr::self_signed(key.as_ref(), &req, Duration::from_secs(3600)).expect("cert"))]
    }

    const RSA: KeyAlgorithm = KeyAlgorithm::Rsa { bits: 2048 };

    #[test]
    fn rsa_prefers_pss_over_pkcs1() {
        use SignatureScheme as S;
        let offered = [S::RSA_PKCS1_SHA256, S::RSA_PKCS1_SHA384, S::RSA_PSS_SHA512, S::RSA_PSS_SHA384];
        assert_eq!(choose_scheme_for(RSA, &offered), Some(S::RSA_PSS_SHA384));
        let offered = [S::RSA_PKCS1_SHA512, S::RSA_PKCS1_SHA384, S::ECDSA_NISTP256_SHA256];
        assert_eq!(choose_scheme_for(RSA, &offered), Some(S::RSA_PKCS1_SHA384));
        // What a TLS 1.3 CertificateVerify allows for RSA: only PSS, so PKCS1 can never be picked there.
        let tls13 = [S::ECDSA_NISTP256_SHA256, S::RSA_PSS_SHA256, S::ED25519];
        assert_eq!(choose_scheme_for(RSA, &tls13), Some(S::RSA_PSS_SHA256));
        assert_eq!(choose_scheme_for(RSA, &[S::ECDSA_NISTP256_SHA256, S::ED25519]), None);
    }

    #[test]
    fn ecdsa_schemes_follow_the_curve() {
        use SignatureScheme as S;
        let offered = [S::RSA_PSS_SHA256, S::ECDSA_NISTP384_SHA384, S::ECDSA_NISTP256_SHA256];
        assert_eq!(choose_scheme_for(KeyAlgorithm::EcP256, &offered), Some(S::ECDSA_NISTP256_SHA256));
        assert_eq!(choose_scheme_for(KeyAlgorithm::EcP384, &offered), Some(S::ECDSA_NISTP384_SHA384));
        assert_eq!(choose_scheme_for(KeyAlgorithm::EcP256, &[S::ECDSA_NISTP384_SHA384]), None);
        assert_eq!(choose_scheme_for(KeyAlgorithm::EcP384, &[S::ECDSA_NISTP256_SHA256, S::RSA_PSS_SHA256]), None);
    }

    #[test]
    fn signer_output_verifies_with_the_public_key() {
        for (alg, scheme) in
            [(RSA, SignatureScheme::RSA_PSS_SHA256), (KeyAlgorithm::EcP256, SignatureScheme::ECDSA_NISTP256_SHA256)]
        {
            let key = soft(alg, "signer");
            let signing = VaultSigningKey::new(key.clone());
            let signer = signing.choose_scheme(&[scheme]).expect("scheme");
            assert_eq!(signer.scheme(), scheme);
            let sig = signer.sign(b"handshake transcript").expect("sign");
            let sign_alg = sign_alg_for(scheme).expect("mapped");
            let raw =
                if sign_alg.is_ecdsa() { crate::sig::ecdsa_der_to_raw(&sig, 32).expect("DER signature") } else { sig };
            let spki = crate::pubkey::PublicKey::from_spki(&key.info().spki_der).expect("spki");
            spki.verify(sign_alg, b"handshake transcript", &raw).expect("signature verifies");
            let expected = match alg {
                KeyAlgorithm::Rsa { .. } => SignatureAlgorithm::RSA,
                _ => SignatureAlgorithm::ECDSA,
            };
            assert_eq!(signing.algorithm(), expected);
            assert_eq!(signing.public_key().expect("spki").as_ref(), key.info().spki_der.as_slice());
        }
    }

    #[test]
    fn replace_refuses_a_mismatched_pair_and_keeps_the_old_one() {
        let a = soft(KeyAlgorithm::EcP256, "a");
        let b = soft(KeyAlgorithm::EcP256, "b");
        let chain_a = self_signed(&a);
        let chain_b = self_signed(&b);
        assert!(SwappableCertifiedKey::new(chain_a.clone(), b.clone()).is_err());
        let swap = SwappableCertifiedKey::new(chain_a.clone(), a.clone()).expect("matching pair");
        let err = swap.replace(chain_b.clone(), a.clone()).expect_err("mismatch refused");
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert_eq!(swap.current().cert, chain_a);
        swap.replace(chain_b.clone(), b).expect("matching pair");
        assert_eq!(swap.current().cert, chain_b);
    }

    #[test]
    fn client_resolver_offers_the_certificate_only_when_a_scheme_fits() {
        let key = soft(KeyAlgorithm::EcP256, "client");
        let swap = SwappableCertifiedKey::new(self_signed(&key), key).expect("pair");
        assert!(ResolvesClientCert::has_certs(&swap));
        assert!(ResolvesClientCert::resolve(&swap, &[], &[SignatureScheme::RSA_PSS_SHA256]).is_none());
        assert!(ResolvesClientCert::resolve(&swap, &[], &[SignatureScheme::ECDSA_NISTP256_SHA256]).is_some());
    }

    #[test]
    fn builders_use_the_given_provider() {
        let key = soft(KeyAlgorithm::EcP256, "server");
        let chain = self_signed(&key);
        let mut roots = RootCertStore::empty();
        roots.add(chain[0].clone()).expect("root");
        let swap = Arc::new(SwappableCertifiedKey::new(chain, key).expect("pair"));
        let provider = default_provider();
        server_config(provider.clone(), swap.clone(), roots.clone(), &[&rustls::version::TLS13]).expect("server");
        client_config(provider, roots, swap, rustls::ALL_VERSIONS).expect("client");
    }
}
