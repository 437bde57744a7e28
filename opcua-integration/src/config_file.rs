//! What every TOML configuration file of ours shares: reading and parsing with the file named in errors, paths
//! relative to the file's folder, and the `[identity]` section (a vault key URI and a certificate file).
//! The server's file is `server::config`; machine-b's client file builds on this module too.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Why a configuration file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the message names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file, or `<text>` for text parsed directly.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// `[identity]`: the application's key, which never leaves its vault, and its certificate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// The key URI (`vaultd:` or `pkcs11:`), never a file.
    pub key: String,
    /// The certificate chain file (DER), the leaf first, issuers after.
    pub certificate: PathBuf,
}

/// Parses TOML text of shape `T`; errors name `<text>` as the file.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| FileError::Parse { path: PathBuf::from("<text>"), message: e.to_string() })
}

/// Reads `path`, then `parse` its text with the file's folder as the base of relative paths. Parse errors from
/// `parse` that name `<text>` are re-addressed to `path`.
pub fn load_with<T, E>(path: &Path, parse: impl FnOnce(&str, &Path) -> Result<T, E>) -> Result<T, E>
where
    E: From<FileError> + AsFileError,
{
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Io { path: path.into(), source })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base).map_err(|mut e| {
        if let Some(FileError::Parse { path: named, .. }) = e.as_file_error_mut() {
            *named = path.to_path_buf();
        }
        e
    })
}

/// Errors that may carry a [`FileError`], so [`load_with`] can name the file in them.
pub trait AsFileError {
    /// The file error inside, if this is one.
    fn as_file_error_mut(&mut self) -> Option<&mut FileError>;
}

/// `path` relative to `base` (the configuration file's folder) unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        identity: IdentitySection,
    }

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        File(#[from] FileError),
    }

    impl AsFileError for TestError {
        fn as_file_error_mut(&mut self) -> Option<&mut FileError> {
            let TestError::File(e) = self;
            Some(e)
        }
    }

    #[test]
    fn errors_name_the_file_and_relative_paths_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.toml");
        std::fs::write(&file, "[identity]\nkey = \"vaultd:object=a\"\ncertificate = \"own/a.der\"\ntypo = 1\n")
            .unwrap();
        let err = load_with(&file, |text, _| parse_toml::<Shape>(text).map_err(TestError::from)).unwrap_err();
        let TestError::File(FileError::Parse { path, message }) = err else { panic!("a parse error") };
        assert_eq!(path, file);
        assert!(message.contains("typo"), "{message}");

        std::fs::write(&file, "[identity]\nkey = \"vaultd:object=a\"\ncertificate = \"own/a.der\"\n").unwrap();
        let (shape, base) =
            load_with(&file, |text, base| Ok::<_, TestError>((parse_toml::<Shape>(text)?, base.to_path_buf())))
                .unwrap();
        assert_eq!(resolve(&base, &shape.identity.certificate), dir.path().join("own/a.der"));
        assert_eq!(resolve(&base, Path::new("/etc/a.der")), PathBuf::from("/etc/a.der"));

        let missing =
            load_with(&dir.path().join("nope.toml"), |text, _| parse_toml::<Shape>(text).map_err(TestError::from));
        assert!(matches!(missing, Err(TestError::File(FileError::Io { .. }))));
    }
}
