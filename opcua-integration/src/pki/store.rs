//! The PKI directory (Part 12 Annex F layout) with trust lists that are re-read when their files change.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use x509_parser::pem::Pem;

use super::cert::{hex, sha1, split_chain, Cert, Crl};
use super::status::CertError;
use super::validate::{evaluate, TrustSnapshot, ValidatedCert, ValidationContext};

/// At most this many certificates are kept in rejected/certs; the oldest go first, so a peer sending many
/// certificates cannot fill the disk.
const MAX_REJECTED: usize = 200;

/// Files larger than this are not certificates or CRLs this store reads (bounds memory on a hostile directory).
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

/// Errors of the store's file operations.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The bytes are not a certificate or CRL.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// The folders of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Folder {
    OwnCerts,
    OwnPrivate,
    TrustedCerts,
    TrustedCrl,
    IssuerCerts,
    IssuerCrl,
    RejectedCerts,
}

impl Folder {
    const ALL: [Folder; 7] = [
        Folder::OwnCerts,
        Folder::OwnPrivate,
        Folder::TrustedCerts,
        Folder::TrustedCrl,
        Folder::IssuerCerts,
        Folder::IssuerCrl,
        Folder::RejectedCerts,
    ];

    pub(super) fn rel(self) -> &'static str {
        match self {
            Folder::OwnCerts => "own/certs",
            Folder::OwnPrivate => "own/private",
            Folder::TrustedCerts => "trusted/certs",
            Folder::TrustedCrl => "trusted/crl",
            Folder::IssuerCerts => "issuer/certs",
            Folder::IssuerCrl => "issuer/crl",
            Folder::RejectedCerts => "rejected/certs",
        }
    }
}

/// A file's identity for the cache: when its size or modification time changes it is parsed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
}

#[derive(Debug)]
enum Parsed {
    Certs(Vec<Cert>),
    Crls(Vec<Crl>),
}

/// A PKI directory in the layout of OPC 10000-12 Annex F:
///
/// ```text
/// <root>/own/certs        this application's certificate(s), DER
/// <root>/own/private      stays empty: the private keys live in the vault and are never written here
/// <root>/trusted/certs    trusted application certificates and trusted CAs
/// <root>/trusted/crl      CRLs of the trusted CAs
/// <root>/issuer/certs     CAs needed to build chains, not trusted by themselves
/// <root>/issuer/crl       CRLs of those CAs
/// <root>/rejected/certs   peer certificates that were refused; move one to trusted/certs to trust it
/// ```
///
/// Certificates are read as DER (`.der`, `.cer`) or PEM (`.pem`, `.crt`; a PEM file may hold several), CRLs as DER
/// or PEM (`.crl`, `.der`, `.pem`). Unreadable files are skipped with a warning. The folders are listed again on
/// every validation and only new or changed files are parsed, so trust changes apply without a restart.
#[derive(Debug)]
pub struct PkiStore {
    root: PathBuf,
    cache: Mutex<Cache>,
}

/// Parsed files by path, and the last snapshot with the listing it was built from.
#[derive(Debug, Default)]
struct Cache {
    files: HashMap<PathBuf, (Stamp, Parsed)>,
    last: Option<(Listing, Arc<TrustSnapshot>)>,
}

/// The trust folders' files with their stamps, in a fixed order: equal listings mean equal trust lists.
type Listing = Vec<(Folder, PathBuf, Stamp)>;

impl PkiStore {
    /// Opens the store at `root`, creating missing folders (the root with mode 0700 on Unix, as it decides trust).
    pub fn create_or_open(root: impl Into<PathBuf>) -> Result<PkiStore, PkiError> {
        let root = root.into();
        let existed = root.is_dir();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        #[cfg(unix)]
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err(&root))?;
        }
        for folder in Folder::ALL {
            let dir = root.join(folder.rel());
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let store = PkiStore { root, cache: Mutex::new(Cache::default()) };
        if fs::read_dir(store.dir(Folder::OwnPrivate)).is_ok_and(|mut d| d.next().is_some()) {
            tracing::warn!(
                dir = %store.dir(Folder::OwnPrivate).display(),
                "own/private is not empty: certvault keeps private keys in the vault, nothing here is used"
            );
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn dir(&self, folder: Folder) -> PathBuf {
        self.root.join(folder.rel())
    }

    /// `own/certs`.
    pub fn own_certs_dir(&self) -> PathBuf {
        self.dir(Folder::OwnCerts)
    }
    /// `trusted/certs`.
    pub fn trusted_certs_dir(&self) -> PathBuf {
        self.dir(Folder::TrustedCerts)
    }
    /// `trusted/crl`.
    pub fn trusted_crl_dir(&self) -> PathBuf {
        self.dir(Folder::TrustedCrl)
    }
    /// `issuer/certs`.
    pub fn issuer_certs_dir(&self) -> PathBuf {
        self.dir(Folder::IssuerCerts)
    }
    /// `issuer/crl`.
    pub fn issuer_crl_dir(&self) -> PathBuf {
        self.dir(Folder::IssuerCrl)
    }
    /// `rejected/certs`.
    pub fn rejected_certs_dir(&self) -> PathBuf {
        self.dir(Folder::RejectedCerts)
    }

    /// Validates a peer certificate chain (leaf first, as received) as Part 4 §6.1.3 and, when the failure is one an
    /// operator fixes by trusting (see [`CertError::should_reject`]), copies the leaf to rejected/certs.
    pub fn validate(&self, chain: &[Vec<u8>], ctx: &ValidationContext) -> Result<ValidatedCert, CertError> {
        let result = self.evaluate(chain, ctx);
        if let Err(e) = &result {
            tracing::info!(status = %e.status_code(), "certificate refused: {e}");
            if e.should_reject() {
                // The first element may be a whole chain ByteString; only its first certificate is the peer's.
                let leaf = chain.first().and_then(|c| split_chain(c).ok()).and_then(|c| c.into_iter().next());
                if let Some(leaf) = leaf {
                    if let Err(io) = self.reject(&leaf) {
                        tracing::warn!("could not record the rejected certificate: {io}");
                    }
                }
            }
        }
        result
    }

    /// Validates like [`PkiStore::validate`] but writes nothing.
    pub fn evaluate(&self, chain: &[Vec<u8>], ctx: &ValidationContext) -> Result<ValidatedCert, CertError> {
        evaluate(&self.snapshot(), chain, ctx)
    }

    /// The trust lists as they are on disk now. The folders are listed on every call; files are parsed only when new
    /// or changed, and an unchanged listing returns the previous snapshot as is.
    pub(crate) fn snapshot(&self) -> Arc<TrustSnapshot> {
        let listing = self.listing();
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((last, snap)) = &cache.last {
            if *last == listing {
                return Arc::clone(snap);
            }
        }
        let mut snap = TrustSnapshot::default();
        for (folder, path, stamp) in &listing {
            let want_crl = matches!(folder, Folder::TrustedCrl | Folder::IssuerCrl);
            let fresh = cache.files.get(path).is_some_and(|(s, _)| s == stamp);
            if !fresh {
                let parsed = if stamp.len > MAX_FILE_LEN {
                    tracing::warn!(path = %path.display(), "skipping oversized file");
                    empty(want_crl)
                } else {
                    parse_file(path, want_crl)
                };
                cache.files.insert(path.clone(), (*stamp, parsed));
            }
            match (cache.files.get(path).map(|(_, p)| p), folder) {
                (Some(Parsed::Certs(c)), Folder::TrustedCerts) => snap.trusted.extend(c.iter().cloned()),
                (Some(Parsed::Certs(c)), _) => snap.issuers.extend(c.iter().cloned()),
                (Some(Parsed::Crls(c)), _) => snap.crls.extend(c.iter().cloned()),
                (None, _) => {}
            }
        }
        // Forget files that are gone, so the cache cannot grow without bound.
        cache.files.retain(|path, _| listing.iter().any(|(_, p, _)| p == path));
        let snap = Arc::new(snap);
        cache.last = Some((listing, Arc::clone(&snap)));
        snap
    }

    fn listing(&self) -> Listing {
        let mut out = Vec::new();
        for folder in [Folder::TrustedCerts, Folder::IssuerCerts, Folder::TrustedCrl, Folder::IssuerCrl] {
            let dir = self.dir(folder);
            let want_crl = matches!(folder, Folder::TrustedCrl | Folder::IssuerCrl);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot list trust folder: {e}");
                    continue;
                }
            };
            let mut files: Vec<(Folder, PathBuf, Stamp)> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| has_extension(p, want_crl))
                .filter_map(|p| {
                    // Follows symlinks, so an operator may link certificates in from elsewhere.
                    let meta = fs::metadata(&p).ok().filter(|m| m.is_file())?;
                    Some((folder, p, Stamp { mtime: meta.modified().ok(), len: meta.len() }))
                })
                .collect();
            files.sort_by(|a, b| a.1.cmp(&b.1));
            out.extend(files);
        }
        out
    }

    /// The certificates in own/certs.
    pub fn own_certificates(&self) -> Vec<Cert> {
        read_certs_in(&self.dir(Folder::OwnCerts))
    }

    /// The certificates in rejected/certs (for GetRejectedList).
    pub fn rejected_certificates(&self) -> Vec<Cert> {
        read_certs_in(&self.dir(Folder::RejectedCerts))
    }

    /// Copies a refused peer certificate to `rejected/certs/<CN> [<thumbprint>].der`, unless it is there already.
    /// Returns the file's path.
    pub fn reject(&self, cert_der: &[u8]) -> Result<PathBuf, PkiError> {
        let path = self.write_cert(Folder::RejectedCerts, cert_der)?;
        self.prune_rejected();
        Ok(path)
    }

    /// Writes a certificate into trusted/certs (for tools and tests; operators may equally copy files).
    pub fn trust(&self, cert_der: &[u8]) -> Result<PathBuf, PkiError> {
        self.write_cert(Folder::TrustedCerts, cert_der)
    }

    /// Writes a CA certificate into issuer/certs: usable to build chains, not trusted by itself.
    pub fn add_issuer(&self, cert_der: &[u8]) -> Result<PathBuf, PkiError> {
        self.write_cert(Folder::IssuerCerts, cert_der)
    }

    /// Writes a CRL into trusted/crl (`trusted`) or issuer/crl.
    pub fn add_crl(&self, crl_der: &[u8], trusted: bool) -> Result<PathBuf, PkiError> {
        Crl::from_der(crl_der).map_err(PkiError::Invalid)?;
        let folder = if trusted { Folder::TrustedCrl } else { Folder::IssuerCrl };
        let name = format!("crl [{}].crl", hex(&sha1(crl_der)));
        write_atomic(&self.dir(folder), &name, crl_der)
    }

    pub(super) fn write_cert(&self, folder: Folder, cert_der: &[u8]) -> Result<PathBuf, PkiError> {
        let cert = Cert::from_der(cert_der).map_err(PkiError::Invalid)?;
        let dir = self.dir(folder);
        let thumb = hex(&cert.thumbprint());
        let tag = format!("[{thumb}]");
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains(&tag) {
                    return Ok(entry.path());
                }
            }
        }
        let name = format!("{} {tag}.der", file_safe(cert.common_name().unwrap_or("cert")));
        write_atomic(&dir, &name, cert_der)
    }

    fn prune_rejected(&self) {
        let dir = self.dir(Folder::RejectedCerts);
        let Ok(entries) = fs::read_dir(&dir) else { return };
        let mut files: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), e.path()))
            .collect();
        if files.len() <= MAX_REJECTED {
            return;
        }
        files.sort();
        for (_, path) in &files[..files.len() - MAX_REJECTED] {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "could not prune rejected certificate: {e}");
            }
        }
    }
}

fn empty(want_crl: bool) -> Parsed {
    if want_crl {
        Parsed::Crls(Vec::new())
    } else {
        Parsed::Certs(Vec::new())
    }
}

pub(super) fn has_extension(path: &Path, want_crl: bool) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let allowed: &[&str] = if want_crl { &["crl", "der", "pem"] } else { &["der", "cer", "pem", "crt"] };
    ext.is_some_and(|e| allowed.contains(&e.as_str()))
}

/// Reads one file as DER or PEM. Problems are logged and yield an empty list: one bad file must not take the trust
/// list down.
fn parse_file(path: &Path, want_crl: bool) -> Parsed {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), "skipping unreadable file: {e}");
            return empty(want_crl);
        }
    };
    let ders = der_objects(&bytes);
    let mut certs = Vec::new();
    let mut crls = Vec::new();
    for der in &ders {
        let parsed = if want_crl {
            Crl::from_der(der).map(|c| crls.push(c))
        } else {
            Cert::from_der(der).map(|c| certs.push(c))
        };
        if let Err(e) = parsed {
            tracing::warn!(path = %path.display(), "skipping unparsable entry: {e}");
        }
    }
    if ders.is_empty() {
        tracing::warn!(path = %path.display(), "skipping file: neither DER nor PEM");
    }
    if want_crl {
        Parsed::Crls(crls)
    } else {
        Parsed::Certs(certs)
    }
}

/// DER as is, or every block of a PEM file.
pub(super) fn der_objects(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.first() == Some(&0x30) {
        return vec![bytes.to_vec()];
    }
    Pem::iter_from_buffer(bytes).map_while(Result::ok).map(|pem| pem.contents).collect()
}

fn read_certs_in(dir: &Path) -> Vec<Cert> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.is_file() && has_extension(p, false)).collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| match parse_file(p, false) {
            Parsed::Certs(c) => c,
            Parsed::Crls(_) => Vec::new(),
        })
        .collect()
}

/// A file name fragment from a common name: path separators, control characters and leading dots removed.
fn file_safe(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' | '[' | ']') {
                '_'
            } else {
                c
            }
        })
        .take(64)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "cert".to_string()
    } else {
        cleaned
    }
}

/// Writes `name` in `dir` through a temporary file and a rename, so readers never see half a certificate.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, PkiError> {
    let path = dir.join(name);
    // The temporary name does not end in a certificate extension, so a concurrent listing skips it.
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), hex(&sha1(name.as_bytes()))));
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PkiError::Io { path: path.clone(), source: e }
    })?;
    Ok(path)
}
