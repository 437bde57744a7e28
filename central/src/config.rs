//! The central's configuration file (TOML). See `docs/central.md` for an example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::envelope::ProvisionEnvelope;
use crate::error::{CentralError, Result};
use crate::issuer::External;
use crate::keymaker::VaultdKeyMaker;
use crate::service::Central;
use crate::Db;

/// `central.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A SQLite file path (created on first use), a `sqlite:` URL, or a `postgres://` URL.
    #[serde(default = "default_database")]
    pub database: String,
    /// Where the operator API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory every CRL is also published to, as `NAME.crl` (DER).
    #[serde(default)]
    pub crl_dir: Option<PathBuf>,
    /// Days a CRL is valid (its nextUpdate).
    #[serde(default = "default_crl_days")]
    pub crl_validity_days: u32,
    /// A file holding the operator API's bearer token (first line). Without it the operator API is open to whoever
    /// reaches `listen`.
    #[serde(default)]
    pub operator_token_file: Option<PathBuf>,
    /// External CA plug-ins, `[external.NAME]`.
    #[serde(default)]
    pub external: BTreeMap<String, External>,
    /// The key that signs update files, `[update_signer]`. Without it requests and receipts are refused.
    #[serde(default)]
    pub update_signer: Option<UpdateSigner>,
    /// The central's own vaultd that makes keys for devices, `[key_maker]`. Without it orders for central-made
    /// keys (and restores) are refused.
    #[serde(default)]
    pub key_maker: Option<KeyMakerConfig>,
}

/// `[update_signer]`: the central's update-signing key and certificate; devices pin that certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSigner {
    /// Vault URI of the signing key (`vaultd:...` or `pkcs11:...`, with a `pin-source`); it signs inside the vault.
    pub key_uri: String,
    /// The key's certificate (chain, leaf first; PEM, or one DER certificate).
    pub certificate: PathBuf,
}

/// `[key_maker]`: the central's own vaultd, which makes keys for devices and holds the backup key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMakerConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The container's serial, when the daemon serves several.
    #[serde(default)]
    pub container: Option<String>,
    /// Where the user PIN comes from: `file:/path` or `env:VARIABLE`.
    pub pin_source: String,
    /// Label of the backup key (RSA, unwrap-only; made inside on first use when missing).
    #[serde(default = "default_backup_key")]
    pub backup_key: String,
}

fn default_backup_key() -> String {
    "central-backup".into()
}

fn default_database() -> String {
    "central.db".into()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8480))
}

fn default_crl_days() -> u32 {
    7
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: default_database(),
            listen: default_listen(),
            crl_dir: None,
            crl_validity_days: default_crl_days(),
            operator_token_file: None,
            external: BTreeMap::new(),
            update_signer: None,
            key_maker: None,
        }
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CentralError::io(format!("reading configuration {}", path.display()), e))?;
        Config::parse(&text).map_err(|e| CentralError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| CentralError::Config(e.to_string()))?;
        for (name, external) in config.external.iter_mut() {
            crate::issuer::IssuerRef::parse(&format!("external:{name}"))?;
            if external.command.is_empty() {
                return Err(CentralError::Config(format!("external.{name}: command is empty")));
            }
            external.name = name.clone();
        }
        if let Some(k) = &config.key_maker {
            certvault::uri::PinSource::parse_source(&k.pin_source)
                .map_err(|e| CentralError::Config(format!("key_maker.pin_source: {e}")))?;
        }
        if let Some(u) = &config.update_signer {
            u.key_uri
                .parse::<certvault::uri::KeyUri>()
                .map_err(|e| CentralError::Config(format!("update_signer.key_uri: {e}")))?;
        }
        if config.crl_validity_days == 0 {
            return Err(CentralError::Config("crl_validity_days must be at least 1".into()));
        }
        Ok(config)
    }

    /// The operator token from `operator_token_file`, if configured.
    pub fn operator_token(&self) -> Result<Option<String>> {
        let Some(path) = &self.operator_token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CentralError::io(format!("reading the operator token {}", path.display()), e))?;
        let token = text.lines().next().unwrap_or_default().trim().to_owned();
        if token.len() < 16 {
            return Err(CentralError::Config(format!(
                "{}: the operator token needs at least 16 characters",
                path.display()
            )));
        }
        Ok(Some(token))
    }

    /// Opens the database and builds the central this configuration describes.
    pub async fn central(&self) -> Result<Central> {
        let db = Db::open(&self.database).await?;
        let mut central =
            Central::new(db).with_crl_validity(Duration::from_secs(u64::from(self.crl_validity_days) * 86_400));
        if let Some(dir) = &self.crl_dir {
            central = central.with_crl_dir(dir.clone());
        }
        for external in self.external.values() {
            central = central.with_external(external.clone());
        }
        Ok(central)
    }

    /// [`Config::central`] with the file formats and key generation wired in: the update signer
    /// (`[update_signer]`) and the key maker (`[key_maker]`) are opened now, when configured; without
    /// `[update_signer]`, processing a request or a receipt fails with an error naming it.
    pub async fn provisioning_central(&self) -> Result<Central> {
        let mut central = self.central().await?;
        if let Some(signer) = self.update_signer.clone() {
            let envelope = blocking(move || ProvisionEnvelope::open(&signer.key_uri, &signer.certificate)).await?;
            tracing::info!(
                certificate = %certvault::provision::thumbprint(envelope.certificate()),
                "update signer ready"
            );
            central = central.with_envelope(Arc::new(envelope));
        }
        if let Some(k) = self.key_maker.clone() {
            let maker = blocking(move || {
                let pin = certvault::uri::PinSource::parse_source(&k.pin_source)
                    .map_err(|e| CentralError::Config(format!("key_maker.pin_source: {e}")))?
                    .read()?;
                VaultdKeyMaker::connect(&k.socket, k.container.clone(), &pin, &k.backup_key)
            })
            .await?;
            let backup = maker.backup_spki().to_vec();
            central = central.with_key_maker(Arc::new(maker), backup);
        }
        Ok(central)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CentralError::Config(format!("opening a vault failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(
            r#"
database = "/var/lib/certvault-central/central.db"
listen = "127.0.0.1:8480"
crl_dir = "/var/lib/certvault-central/crl"

[external.corporate]
command = ["/usr/local/bin/corporate-ca", "--profile", "opcua", "{csr}"]
csr_input = "file"
timeout_secs = 120

[update_signer]
key_uri = "vaultd:object=update-signer?socket=/run/certvault-central/vaultd.sock&pin-source=file:/etc/certvault-central/pin"
certificate = "/etc/certvault-central/update-signer.pem"

[key_maker]
socket = "/run/certvault-central/vaultd.sock"
pin_source = "file:/etc/certvault-central/pin"
backup_key = "central-backup"
"#,
        )
        .unwrap();
        assert_eq!(c.key_maker.as_ref().unwrap().backup_key, "central-backup");
        assert!(c.update_signer.is_some());
        assert!(Config::parse("[key_maker]\nsocket = '/s'\npin_source = 'nope'").is_err());
        assert!(Config::parse("[update_signer]\nkey_uri = 'http://x'\ncertificate = '/c'").is_err());
        assert_eq!(c.external["corporate"].name, "corporate");
        assert_eq!(c.crl_validity_days, 7);
        assert!(Config::parse("databse = 'x'").is_err(), "unknown keys are refused");
        assert!(Config::parse("[external.x]\ncommand = []").is_err());
        assert!(Config::parse("listen = 'nope'").is_err());
    }
}
