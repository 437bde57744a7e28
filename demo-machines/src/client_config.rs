//! machine-b's TOML configuration file.
//!
//! ```toml
//! [client]
//! server_url = "opc.tcp://machine-a.example:4840/"   # where machine-a listens
//! application_uri = "urn:example:machine-b"           # also in machine-b's certificate
//! application_name = "Machine B"                      # optional
//!
//! [identity]
//! # The private key never leaves its vault: a vaultd or PKCS#11 URI (RFC 7512), never a file.
//! key = "pkcs11:token=machine-b;object=machine-b?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/machine-b/pin"
//! certificate = "pki/own/certs/machine-b.der"         # DER, the leaf first, issuers after
//!
//! [security]
//! policies = ["Aes256_Sha256_RsaPss", "Basic256Sha256", "Aes128_Sha256_RsaOaep"]   # optional; allowed, strongest first
//! pki = "pki"                                         # trust store that judges machine-a's certificate
//!
//! [user]                                              # who operates: a user certificate ...
//! certificate = "user/operator.der"
//! key = "pkcs11:token=machine-b;object=operator?module-path=...&pin-source=file:/etc/machine-b/pin"
//! # ... or a user name:  name = "operator"  and  password_file = "operator.password"
//!
//! [run]                                               # optional
//! duration = "10s"                                    # how long to watch (ms, s, m)
//! setpoint = 180.0                                    # speed setpoint to write, bottles/min
//! publishing_interval_ms = 250
//! ```
//! The security mode is always SignAndEncrypt and policy None is never used for the session (discovery runs over
//! an unsecured channel, as OPC UA does; the chosen endpoint is then checked again inside the secured session).
//! Relative paths are relative to the file's folder. Unknown keys are errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use certvault_opcua::channel::policy::SecurityPolicy;
pub use certvault_opcua::config_file::IdentitySection;
use certvault_opcua::config_file::{load_with, parse_toml, resolve, AsFileError, FileError};
use serde::Deserialize;

/// Why machine-b's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// The file cannot be read or parsed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A value that parses but cannot be used.
    #[error("{0}")]
    Invalid(String),
}

impl AsFileError for ClientConfigError {
    fn as_file_error_mut(&mut self) -> Option<&mut FileError> {
        match self {
            ClientConfigError::File(e) => Some(e),
            ClientConfigError::Invalid(_) => None,
        }
    }
}

/// The parsed file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Where to connect and who we are.
    pub client: ClientSection,
    /// Certificate and vault key.
    pub identity: IdentitySection,
    /// Policies and the server trust store.
    pub security: SecuritySection,
    /// The operator.
    pub user: UserSection,
    /// What to do.
    #[serde(default)]
    pub run: RunSection,
    #[serde(skip)]
    base: PathBuf,
}

/// `[client]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// machine-a's endpoint URL.
    pub server_url: String,
    /// Our ApplicationUri.
    pub application_uri: String,
    /// Our ApplicationName.
    #[serde(default = "default_name")]
    pub application_name: String,
}

fn default_name() -> String {
    "Machine B".into()
}

/// `[security]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// Allowed policies, strongest first.
    #[serde(default = "default_policies")]
    pub policies: Vec<String>,
    /// Trust store for server certificates.
    pub pki: PathBuf,
}

fn default_policies() -> Vec<String> {
    ["Aes256_Sha256_RsaPss", "Basic256Sha256", "Aes128_Sha256_RsaOaep"].map(String::from).to_vec()
}

/// `[user]`: `certificate` + `key`, or `name` + `password_file`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// User certificate (DER).
    pub certificate: Option<PathBuf>,
    /// The user certificate's key URI.
    pub key: Option<String>,
    /// User name.
    pub name: Option<String>,
    /// File holding the password (one line).
    pub password_file: Option<PathBuf>,
}

/// `[run]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// How long to watch, e.g. "10s".
    #[serde(default = "default_duration")]
    pub duration: String,
    /// The speed setpoint to write.
    #[serde(default = "default_setpoint")]
    pub setpoint: f64,
    /// Requested publishing interval.
    #[serde(default = "default_interval")]
    pub publishing_interval_ms: u64,
}

fn default_duration() -> String {
    "10s".into()
}
fn default_setpoint() -> f64 {
    180.0
}
fn default_interval() -> u64 {
    250
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { duration: default_duration(), setpoint: default_setpoint(), publishing_interval_ms: 250 }
    }
}

/// How machine-b authenticates.
#[derive(Clone, Debug, PartialEq)]
pub enum UserChoice {
    /// An X.509 user certificate with its key URI.
    Certificate {
        /// The certificate file.
        certificate: PathBuf,
        /// The key URI.
        key: String,
    },
    /// A user name with the password in a file.
    UserName {
        /// The name.
        name: String,
        /// The password file.
        password_file: PathBuf,
    },
}

impl ClientConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, ClientConfigError> {
        load_with(path, Self::parse)
    }

    /// Parses text whose relative paths are relative to `base`, and checks every value.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ClientConfigError> {
        let mut config: ClientConfig = parse_toml(text)?;
        config.base = base.to_path_buf();
        if !config.client.server_url.starts_with("opc.tcp://") {
            return Err(ClientConfigError::Invalid(format!(
                "[client] server_url {:?} is not an opc.tcp:// URL",
                config.client.server_url
            )));
        }
        config.policies()?;
        check_key_uri("[identity] key", &config.identity.key)?;
        if let UserChoice::Certificate { key, .. } = config.user()? {
            check_key_uri("[user] key", &key)?;
        }
        config.duration()?;
        if !config.run.setpoint.is_finite() {
            return Err(ClientConfigError::Invalid("[run] setpoint must be a number".into()));
        }
        if config.run.publishing_interval_ms == 0 || config.run.publishing_interval_ms > 60_000 {
            return Err(ClientConfigError::Invalid("[run] publishing_interval_ms must be 1 ..= 60000".into()));
        }
        Ok(config)
    }

    /// `path` relative to the file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve(&self.base, path)
    }

    /// The allowed policies, strongest first. None is refused.
    pub fn policies(&self) -> Result<Vec<SecurityPolicy>, ClientConfigError> {
        if self.security.policies.is_empty() {
            return Err(ClientConfigError::Invalid("[security] policies is empty".into()));
        }
        self.security
            .policies
            .iter()
            .map(|name| {
                let policy = certvault_opcua::server::config::parse_policy(name)
                    .map_err(|e| ClientConfigError::Invalid(format!("[security] policies: {e}")))?;
                if policy.is_none() {
                    return Err(ClientConfigError::Invalid(
                        "[security] policies: machine-b never uses policy None".into(),
                    ));
                }
                Ok(policy)
            })
            .collect()
    }

    /// The user, checked: exactly one of certificate + key or name + password_file.
    pub fn user(&self) -> Result<UserChoice, ClientConfigError> {
        let u = &self.user;
        match (&u.certificate, &u.key, &u.name, &u.password_file) {
            (Some(certificate), Some(key), None, None) => {
                Ok(UserChoice::Certificate { certificate: self.resolve(certificate), key: key.clone() })
            }
            (None, None, Some(name), Some(file)) if !name.is_empty() => {
                Ok(UserChoice::UserName { name: name.clone(), password_file: self.resolve(file) })
            }
            _ => Err(ClientConfigError::Invalid(
                "[user] needs either certificate and key (an X.509 user whose key is in a vault) or name and \
                 password_file, not a mix"
                    .into(),
            )),
        }
    }

    /// `[run] duration`.
    pub fn duration(&self) -> Result<Duration, ClientConfigError> {
        parse_duration(&self.run.duration).map_err(|e| ClientConfigError::Invalid(format!("[run] duration: {e}")))
    }
}

fn check_key_uri(what: &str, uri: &str) -> Result<(), ClientConfigError> {
    uri.parse::<certvault::uri::KeyUri>().map(|_| ()).map_err(|e| {
        ClientConfigError::Invalid(format!("{what}: {e} (a vaultd: or pkcs11: URI; keys are never files)"))
    })
}

/// Parses "250ms", "10s", "1.5s", "2m" (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s or m)")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text:?} must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[client]
server_url = "opc.tcp://127.0.0.1:4840/"
application_uri = "urn:test:machine-b"

[identity]
key = "vaultd:object=machine-b"
certificate = "own.der"

[security]
pki = "pki"

[user]
certificate = "user.der"
key = "vaultd:object=operator"

[run]
duration = "3s"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = ClientConfig::parse(GOOD, Path::new("/etc/b")).unwrap();
        assert_eq!(c.policies().unwrap()[0], SecurityPolicy::Aes256Sha256RsaPss);
        assert_eq!(c.duration().unwrap(), Duration::from_secs(3));
        assert_eq!(c.run.setpoint, 180.0);
        assert_eq!(
            c.user().unwrap(),
            UserChoice::Certificate { certificate: "/etc/b/user.der".into(), key: "vaultd:object=operator".into() }
        );
    }

    #[test]
    fn a_user_name_works_too() {
        let text = GOOD.replace(
            "certificate = \"user.der\"\nkey = \"vaultd:object=operator\"",
            "name = \"op\"\npassword_file = \"pw\"",
        );
        let c = ClientConfig::parse(&text, Path::new("/b")).unwrap();
        assert_eq!(c.user().unwrap(), UserChoice::UserName { name: "op".into(), password_file: "/b/pw".into() });
    }

    #[test]
    fn mistakes_are_errors() {
        for (from, to) in [
            ("opc.tcp://127", "http://127"),
            ("vaultd:object=machine-b", "file:/etc/key.pem"),
            ("[security]\n", "[security]\npolicies = [\"None\"]\n"),
            ("[security]\n", "[security]\npolicies = [\"Basic512\"]\n"),
            ("[security]\n", "[security]\npolicies = []\n"),
            ("key = \"vaultd:object=operator\"", "name = \"op\""),
            ("key = \"vaultd:object=operator\"", ""),
            ("duration = \"3s\"", "duration = \"3 parsecs\""),
            ("duration = \"3s\"", "duration = \"-1s\""),
            ("duration = \"3s\"", "durration = \"3s\""),
            ("[run]", "[run]\nsetpoint = nan"),
            ("[run]", "[run]\npublishing_interval_ms = 0"),
        ] {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from}");
            let err = ClientConfig::parse(&text, Path::new(".")).expect_err(to);
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        for bad in ["", "s", "0s", "10h", "1e400s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
