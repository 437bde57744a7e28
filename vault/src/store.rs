//! [`KeyStore`]: the management side of a vault (list, generate, import, certificates, CSRs), shared by the daemon
//! client and the PKCS#11 backend so the CLI and the OPC UA stack treat both alike.

use zeroize::Zeroizing;

use crate::csr::CsrRequest;
use crate::error::Result;
use crate::key::{KeyAlgorithm, KeyInfo, KeyPolicy, KeySelector, SharedKey};

/// A place that holds keys: a vaultd container or a PKCS#11 token.
pub trait KeyStore: Send + Sync {
    /// Every key, public facts only.
    fn list(&self) -> Result<Vec<KeyInfo>>;

    /// A handle to one key. Fails with [`crate::VaultError::KeyNotFound`] when nothing matches.
    fn key(&self, selector: &KeySelector) -> Result<SharedKey>;

    /// Makes a new key inside the vault. The private half never leaves it.
    fn generate(&self, label: &str, algorithm: KeyAlgorithm, policy: KeyPolicy) -> Result<KeyInfo>;

    /// Moves an existing PKCS#8 key into the vault (migration). The caller should destroy its copy.
    fn import_pkcs8(&self, label: &str, pkcs8: Zeroizing<Vec<u8>>, policy: KeyPolicy) -> Result<KeyInfo>;

    /// The certificate chain stored with a key, leaf first (DER). Empty when none is stored.
    fn cert_chain(&self, selector: &KeySelector) -> Result<Vec<Vec<u8>>>;

    /// Stores (replaces) the certificate chain of a key, leaf first (DER). The leaf must carry the key's public key.
    fn store_cert_chain(&self, selector: &KeySelector, chain: Vec<Vec<u8>>) -> Result<()>;

    /// Makes a PKCS#10 CSR signed by the key, inside the vault where the backend can.
    fn create_csr(&self, selector: &KeySelector, request: &CsrRequest) -> Result<Vec<u8>> {
        let key = self.key(selector)?;
        crate::csr::create_csr(key.as_ref(), request)
    }
}

/// Checks that a chain's leaf certificate carries `info`'s public key; both backends call it before storing.
pub fn check_leaf_matches(info: &KeyInfo, chain: &[Vec<u8>]) -> Result<()> {
    let leaf = chain.first().ok_or_else(|| crate::VaultError::InvalidInput("empty certificate chain".into()))?;
    let pk = crate::PublicKey::from_certificate(leaf)?;
    if pk.spki_der() != info.spki_der.as_slice() {
        return Err(crate::VaultError::InvalidInput(format!(
            "the leaf certificate does not carry the public key of {:?}",
            info.label
        )));
    }
    for (i, der) in chain.iter().enumerate().skip(1) {
        x509_parser::parse_x509_certificate(der)
            .map_err(|e| crate::VaultError::InvalidInput(format!("chain certificate {i}: {e}")))?;
    }
    Ok(())
}

/// Opens the key a `pkcs11:` or `vaultd:` URI names, logging in with the URI's PIN source. This is how
/// applications (the OPC UA server and client) get their key from configuration.
///
/// ```no_run
/// let key = certvault::store::open_key(
///     &"vaultd:serial=CV-0001;object=opcua-server?socket=/run/certvault/vaultd.sock&pin-source=env:CERTVAULT_PIN"
///         .parse()?,
/// )?;
/// println!("{} key {}", key.info().algorithm, key.info().label);
/// # Ok::<(), certvault::VaultError>(())
/// ```
pub fn open_key(uri: &crate::uri::KeyUri) -> Result<SharedKey> {
    use crate::uri::KeyUri;
    match uri {
        KeyUri::Pkcs11(p) => Ok(crate::pkcs11::Pkcs11Key::open_uri(p)?),
        KeyUri::Vaultd(v) => {
            let selector = v.key_selector()?;
            let socket = v.socket.clone().unwrap_or_else(crate::daemon::server::default_socket);
            let client = crate::DaemonClient::connect(socket, v.serial.clone())?;
            if let Some(pin) = &v.pin {
                client.login(&pin.read()?)?;
            }
            client.key(&selector)
        }
    }
}
