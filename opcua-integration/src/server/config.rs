//! The server's TOML configuration file.
//!
//! ```toml
//! [server]
//! endpoint_url = "opc.tcp://machine-a.example:4840/"
//! bind = "0.0.0.0:4840"                 # optional; default 127.0.0.1 and the URL's port
//! application_uri = "urn:example:machine-a"
//! application_name = "Machine A"        # optional
//! product_uri = "urn:certvault"         # optional
//!
//! [identity]
//! # The private key never leaves its vault: a vaultd or PKCS#11 URI (RFC 7512), never a file.
//! key = "vaultd:object=machine-a?pin-source=file:/etc/machine-a/pin"
//! certificate = "pki/own/certs/machine-a.der"   # DER, the leaf first, issuers after
//!
//! [security]
//! policies = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
//! modes = ["SignAndEncrypt"]            # and/or "Sign"
//! allow_none = false                    # policy None only when set
//! pki = "pki"                           # Part 12 Annex F trust store for client certificates
//!
//! [users]
//! anonymous = true                      # anonymous sessions (read-only by default)
//! file = "users.toml"                   # enables user name tokens; see `server::users`
//! certificates = "pki-users"            # enables X.509 user tokens: the user certificate trust list
//!
//! [limits]                              # all optional
//! max_sessions = 100
//! max_subscriptions_per_session = 100
//! max_monitored_items_per_subscription = 10000
//! max_message_size = 16777216
//! max_chunk_count = 4096
//!
//! [push]                                # optional: GDS push (Part 12 §7.7), see `server::push`
//! enabled = true                        # administrators (users file) over SignAndEncrypt renew the certificate
//! max_trust_list_size = 1048576         # optional; bytes
//! sealed_keys = false                   # optional; accept "CertVaultSealed" private keys, opened in the vault
//! ```
//! With push enabled, UpdateCertificate rewrites `[identity] certificate`, and at start a certificate that no
//! longer fits the configured key is paired with the key's GDS successor in the same vault (label
//! `<label>.gds-...`), so a renewal with a new key survives a restart without editing this file.
//! Relative paths are relative to the configuration file's folder. Unknown keys are errors, so a typo cannot
//! silently leave a default (such as anonymous access) in place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{ServerBuilder, SessionLimits, SubscriptionLimits, UserDatabase, UserTokenKinds};
use crate::channel::policy::{SecurityMode, SecurityPolicy};
pub use crate::config_file::IdentitySection;
use crate::config_file::{load_with, parse_toml, resolve, AsFileError, FileError};
use crate::pki::PkiStore;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, or a file it names, cannot be read or parsed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A value that parses but cannot be used.
    #[error("configuration: {0}")]
    Invalid(String),
    /// The users file.
    #[error(transparent)]
    Users(#[from] super::users::UsersError),
    /// A PKI folder.
    #[error("PKI store {path}: {message}")]
    Pki {
        /// The folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The vault key.
    #[error("vault key {uri}: {source}")]
    Vault {
        /// The key URI, PIN redacted.
        uri: String,
        /// What the vault said.
        source: certvault::VaultError,
    },
    /// The server identity (certificate and key) does not fit.
    #[error("identity: {0}")]
    Identity(#[from] crate::Error),
}

impl AsFileError for ConfigError {
    fn as_file_error_mut(&mut self) -> Option<&mut FileError> {
        match self {
            ConfigError::File(e) => Some(e),
            _ => None,
        }
    }
}

/// The parsed configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where and who the server is.
    pub server: ServerSection,
    /// Certificate and vault key.
    pub identity: IdentitySection,
    /// Endpoints and the client trust store.
    pub security: SecuritySection,
    /// User tokens.
    #[serde(default)]
    pub users: UsersSection,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// GDS push.
    #[serde(default)]
    pub push: PushSection,
    #[serde(skip)]
    base: PathBuf,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The URL clients use.
    pub endpoint_url: String,
    /// Where to listen.
    #[serde(default)]
    pub bind: Option<SocketAddr>,
    /// The ApplicationUri (also in the certificate).
    pub application_uri: String,
    /// The application name.
    #[serde(default)]
    pub application_name: Option<String>,
    /// The ProductUri.
    #[serde(default)]
    pub product_uri: Option<String>,
}

/// `[security]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Policy names (`Basic256Sha256`, ...) or URIs.
    pub policies: Vec<String>,
    /// `Sign` and/or `SignAndEncrypt`.
    pub modes: Vec<String>,
    /// Also offer policy None.
    #[serde(default)]
    pub allow_none: bool,
    /// The client trust store folder.
    pub pki: PathBuf,
}

/// `[users]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersSection {
    /// Anonymous sessions.
    #[serde(default = "yes")]
    pub anonymous: bool,
    /// The users file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The user certificate trust list folder.
    #[serde(default)]
    pub certificates: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for UsersSection {
    fn default() -> Self {
        UsersSection { anonymous: true, file: None, certificates: None }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Sessions at once.
    pub max_sessions: Option<usize>,
    /// Subscriptions per session.
    pub max_subscriptions_per_session: Option<usize>,
    /// Monitored items per subscription.
    pub max_monitored_items_per_subscription: Option<usize>,
    /// Largest message.
    pub max_message_size: Option<u32>,
    /// Most chunks per message.
    pub max_chunk_count: Option<u32>,
}

/// `[push]`: GDS push (OPC 10000-12 §7.7). Callable only by administrators of the users file over SignAndEncrypt.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSection {
    /// Enables the ServerConfiguration methods and the TrustList. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// MaxTrustListSize in bytes (default 1 MiB).
    #[serde(default)]
    pub max_trust_list_size: Option<u32>,
    /// Accept UpdateCertificate with a private key sealed to the vault's transport key ("CertVaultSealed", opened
    /// inside the vault; the vault needs `certvault device init`). Default false: sealed keys are refused.
    #[serde(default)]
    pub sealed_keys: bool,
}

/// A policy by name (`Basic256Sha256`) or URI.
pub fn parse_policy(name: &str) -> Result<SecurityPolicy, ConfigError> {
    SecurityPolicy::ALL
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name) || p.uri() == name)
        .ok_or_else(|| ConfigError::Invalid(format!("unknown security policy {name:?}")))
}

/// A mode by name.
pub fn parse_mode(name: &str) -> Result<SecurityMode, ConfigError> {
    match name.to_ascii_lowercase().as_str() {
        "sign" => Ok(SecurityMode::Sign),
        "signandencrypt" | "sign_and_encrypt" => Ok(SecurityMode::SignAndEncrypt),
        "none" => Err(ConfigError::Invalid("mode None comes with allow_none = true, not in modes".into())),
        _ => Err(ConfigError::Invalid(format!("unknown security mode {name:?}"))),
    }
}

impl ConfigFile {
    /// Reads and checks a configuration file (nothing is opened yet).
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        load_with(path, Self::parse)
    }

    /// Parses configuration text whose relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<ConfigFile, ConfigError> {
        let mut config: ConfigFile = parse_toml(text)?;
        config.base = base.to_path_buf();
        config.endpoints()?;
        config
            .identity
            .key
            .parse::<certvault::uri::KeyUri>()
            .map_err(|source| ConfigError::Vault { uri: "[identity] key".into(), source })?;
        Ok(config)
    }

    /// `path` relative to the configuration file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve(&self.base, path)
    }

    /// The (policy, mode) pairs: every policy with every mode.
    pub fn endpoints(&self) -> Result<Vec<(SecurityPolicy, SecurityMode)>, ConfigError> {
        let mut out = Vec::new();
        for name in &self.security.policies {
            let policy = parse_policy(name)?;
            if policy.is_none() {
                return Err(ConfigError::Invalid("policy None comes with allow_none = true, not in policies".into()));
            }
            for mode in &self.security.modes {
                out.push((policy, parse_mode(mode)?));
            }
        }
        if out.is_empty() && !self.security.allow_none {
            return Err(ConfigError::Invalid("no endpoints: give [security] policies and modes".into()));
        }
        Ok(out)
    }

    /// Opens what the configuration names (the vault key, the certificate, the trust stores, the users file) and
    /// returns a builder ready to start. Blocking: it talks to the vault.
    pub fn builder(&self) -> Result<ServerBuilder, ConfigError> {
        let uri: certvault::uri::KeyUri =
            self.identity.key.parse().map_err(|source| ConfigError::Vault { uri: "[identity] key".into(), source })?;
        let vault_err = |source| ConfigError::Vault { uri: redacted(&uri), source };
        let key = certvault::store::open_key(&uri).map_err(vault_err)?;
        let cert_path = self.resolve(&self.identity.certificate);
        let chain = std::fs::read(&cert_path).map_err(|source| FileError::Io { path: cert_path.clone(), source })?;
        let push = match self.push.enabled {
            true => {
                if !self.endpoints()?.iter().any(|(_, m)| *m == SecurityMode::SignAndEncrypt) {
                    return Err(ConfigError::Invalid("[push] needs SignAndEncrypt in [security] modes".into()));
                }
                if self.users.file.is_none() {
                    return Err(ConfigError::Invalid("[push] needs a [users] file with an administrator".into()));
                }
                Some(open_key_store(&uri).map_err(vault_err)?)
            }
            false => None,
        };
        let key = match &push {
            Some(store) => successor_key(store.as_ref(), &uri, key, &chain).map_err(vault_err)?,
            None => key,
        };
        let mut builder = ServerBuilder::new(self.server.endpoint_url.clone())
            .application_uri(self.server.application_uri.clone())
            .identity(key, chain)?;
        if let Some(name) = &self.server.application_name {
            builder = builder.application_name(name.clone());
        }
        if let Some(uri) = &self.server.product_uri {
            builder = builder.product_uri(uri.clone());
        }
        if let Some(bind) = self.server.bind {
            builder = builder.bind(bind);
        }
        for (policy, mode) in self.endpoints()? {
            builder = builder.endpoint(policy, mode);
        }
        if self.security.allow_none {
            builder = builder.allow_security_none();
        }
        builder = builder.pki(open_store(&self.resolve(&self.security.pki))?);
        if let Some(file) = &self.users.file {
            builder = builder.users(UserDatabase::load(&self.resolve(file))?);
        }
        if let Some(dir) = &self.users.certificates {
            builder = builder.user_pki(open_store(&self.resolve(dir))?);
        }
        let mut kinds = builder.config().user_tokens;
        kinds.anonymous = self.users.anonymous;
        builder = builder.user_tokens(UserTokenKinds { ..kinds });
        let mut sessions = SessionLimits::default();
        if let Some(n) = self.limits.max_sessions {
            sessions.max_sessions = n;
        }
        let mut subscriptions = SubscriptionLimits::default();
        if let Some(n) = self.limits.max_subscriptions_per_session {
            subscriptions.max_subscriptions_per_session = n;
        }
        if let Some(n) = self.limits.max_monitored_items_per_subscription {
            subscriptions.max_monitored_items_per_subscription = n;
        }
        let mut limits = builder.config().limits;
        if let Some(n) = self.limits.max_message_size {
            limits.max_message_size = n;
        }
        if let Some(n) = self.limits.max_chunk_count {
            limits.max_chunk_count = n;
        }
        if let Some(store) = push {
            let mut push = super::push::PushConfig::new(store);
            if let Some(n) = self.push.max_trust_list_size {
                push.max_trust_list_size = n;
            }
            push.certificate_file = Some(cert_path);
            if self.push.sealed_keys {
                push.sealed_key_importer = Some(open_sealed_key_importer(&uri).map_err(vault_err)?);
            }
            builder = builder.push(push);
        }
        Ok(builder.session_limits(sessions).subscription_limits(subscriptions).limits(limits))
    }
}

fn redacted(uri: &certvault::uri::KeyUri) -> String {
    match uri {
        certvault::uri::KeyUri::Pkcs11(p) => p.to_string_redacted(),
        certvault::uri::KeyUri::Vaultd(v) => v.to_string(),
    }
}

/// The vault that holds the key `uri` names, for making new keys and CSRs in it (GDS push).
pub fn open_key_store(uri: &certvault::uri::KeyUri) -> Result<Arc<dyn certvault::KeyStore>, certvault::VaultError> {
    use certvault::uri::KeyUri;
    match uri {
        KeyUri::Pkcs11(p) => Ok(Arc::new(certvault::pkcs11::Pkcs11Token::open_uri(p)?)),
        KeyUri::Vaultd(v) => {
            let socket = v.socket.clone().unwrap_or_else(certvault::daemon::server::default_socket);
            let client = certvault::DaemonClient::connect(socket, v.serial.clone())?;
            if let Some(pin) = &v.pin {
                client.login(&pin.read()?)?;
            }
            Ok(Arc::new(client))
        }
    }
}

/// The importer of sealed private keys for the vault that holds the key `uri` names (`[push] sealed_keys`).
pub fn open_sealed_key_importer(
    uri: &certvault::uri::KeyUri,
) -> Result<Arc<dyn super::push::SealedKeyImporter>, certvault::VaultError> {
    use certvault::uri::KeyUri;
    match uri {
        KeyUri::Pkcs11(p) => Ok(Arc::new(certvault::pkcs11::Pkcs11Token::open_uri(p)?)),
        KeyUri::Vaultd(v) => {
            let socket = v.socket.clone().unwrap_or_else(certvault::daemon::server::default_socket);
            let client = certvault::DaemonClient::connect(socket, v.serial.clone())?;
            if let Some(pin) = &v.pin {
                client.login(&pin.read()?)?;
            }
            Ok(Arc::new(client))
        }
    }
}

/// The key the certificate chain certifies: the configured key, or, after a GDS push renewal with a new key, its
/// successor in the same vault (label `<configured label>.gds-...`). Anything else keeps the configured key, and
/// the server's start-up check reports the mismatch.
fn successor_key(
    store: &dyn certvault::KeyStore,
    uri: &certvault::uri::KeyUri,
    key: certvault::SharedKey,
    chain: &[u8],
) -> Result<certvault::SharedKey, certvault::VaultError> {
    let Some(leaf) = crate::channel::asymmetric::leaf_certificate(chain).ok() else { return Ok(key) };
    let Ok(certified) = certvault::PublicKey::from_certificate(leaf) else { return Ok(key) };
    let fits = |spki: &[u8]| {
        certvault::PublicKey::from_spki(spki)
            .is_ok_and(|k| k.algorithm() == certified.algorithm() && k.raw_bytes() == certified.raw_bytes())
    };
    if fits(&key.info().spki_der) {
        return Ok(key);
    }
    let base = key.info().label.clone();
    let prefix = format!("{base}.gds-");
    let successor = store.list()?.into_iter().find(|k| k.label.starts_with(&prefix) && fits(&k.spki_der));
    match successor {
        Some(info) => {
            tracing::info!(configured = %base, using = %info.label, uri = %redacted(uri), "the certificate belongs to the key's GDS successor");
            store.key(&certvault::KeySelector::Id(info.id))
        }
        None => Ok(key),
    }
}

fn open_store(path: &Path) -> Result<Arc<PkiStore>, ConfigError> {
    PkiStore::create_or_open(path)
        .map(Arc::new)
        .map_err(|e| ConfigError::Pki { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
endpoint_url = "opc.tcp://localhost:4840/"
application_uri = "urn:test"

[identity]
key = "vaultd:object=machine-a"
certificate = "own.der"

[security]
policies = ["Basic256Sha256", "http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss"]
modes = ["Sign", "SignAndEncrypt"]
pki = "pki"

[users]
anonymous = false
"#;

    #[test]
    fn parses_and_resolves() {
        let config = ConfigFile::parse(GOOD, Path::new("/etc/a")).unwrap();
        assert_eq!(config.endpoints().unwrap().len(), 4);
        assert_eq!(config.resolve(&config.security.pki), PathBuf::from("/etc/a/pki"));
        assert!(!config.users.anonymous);
        assert!(!config.security.allow_none);
    }

    #[test]
    fn mistakes_are_errors() {
        for (from, to) in [
            ("Basic256Sha256\"", "Basic512\""),
            ("\"Sign\"", "\"None\""),
            ("anonymous = false", "anonymus = false"),
            ("vaultd:object=machine-a", "file:/etc/key.pem"),
        ] {
            let text = GOOD.replacen(from, to, 1);
            assert!(ConfigFile::parse(&text, Path::new(".")).is_err(), "{to} must be refused");
        }
        let none = GOOD.replacen("\"Basic256Sha256\"", "\"None\"", 1);
        assert!(ConfigFile::parse(&none, Path::new(".")).is_err(), "None belongs to allow_none");
    }
}
