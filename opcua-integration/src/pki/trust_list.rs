//! The trust lists as OPC UA exchanges them (Part 12 §7.8.2, TrustListDataType) over the store's Annex F folders:
//! read them, replace some of them at once (CloseAndUpdate), add or remove one certificate.
//!
//! A replacement is checked completely before the first file changes, so a bad entry leaves the store as it was.

use std::fs;

use super::cert::{hex, sha1, Cert, Crl};
use super::store::{der_objects, has_extension, write_atomic, Folder, PkiError, PkiStore};

/// The TrustListMasks bits (Part 12 §7.8.2.7): which of the four lists a read or an update covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustListMasks(pub u32);

impl TrustListMasks {
    /// trusted/certs.
    pub const TRUSTED_CERTIFICATES: u32 = 1;
    /// trusted/crl.
    pub const TRUSTED_CRLS: u32 = 2;
    /// issuer/certs.
    pub const ISSUER_CERTIFICATES: u32 = 4;
    /// issuer/crl.
    pub const ISSUER_CRLS: u32 = 8;
    /// All four lists.
    pub const ALL: TrustListMasks = TrustListMasks(15);

    /// Whether the list `bit` is covered.
    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// The four lists, DER each, in the order of TrustListDataType.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustLists {
    /// Which lists are present (the others are left alone by an update).
    pub specified: u32,
    /// Trusted application and CA certificates.
    pub trusted_certificates: Vec<Vec<u8>>,
    /// CRLs of trusted CAs.
    pub trusted_crls: Vec<Vec<u8>>,
    /// CAs to build chains with, not trusted by themselves.
    pub issuer_certificates: Vec<Vec<u8>>,
    /// CRLs of those CAs.
    pub issuer_crls: Vec<Vec<u8>>,
}

const LISTS: [(u32, Folder, bool); 4] = [
    (TrustListMasks::TRUSTED_CERTIFICATES, Folder::TrustedCerts, false),
    (TrustListMasks::TRUSTED_CRLS, Folder::TrustedCrl, true),
    (TrustListMasks::ISSUER_CERTIFICATES, Folder::IssuerCerts, false),
    (TrustListMasks::ISSUER_CRLS, Folder::IssuerCrl, true),
];

impl TrustLists {
    fn list(&self, bit: u32) -> &Vec<Vec<u8>> {
        match bit {
            TrustListMasks::TRUSTED_CERTIFICATES => &self.trusted_certificates,
            TrustListMasks::TRUSTED_CRLS => &self.trusted_crls,
            TrustListMasks::ISSUER_CERTIFICATES => &self.issuer_certificates,
            _ => &self.issuer_crls,
        }
    }

    fn list_mut(&mut self, bit: u32) -> &mut Vec<Vec<u8>> {
        match bit {
            TrustListMasks::TRUSTED_CERTIFICATES => &mut self.trusted_certificates,
            TrustListMasks::TRUSTED_CRLS => &mut self.trusted_crls,
            TrustListMasks::ISSUER_CERTIFICATES => &mut self.issuer_certificates,
            _ => &mut self.issuer_crls,
        }
    }

    /// Total size of the DER objects, the measure MaxTrustListSize bounds.
    pub fn byte_len(&self) -> usize {
        LISTS.iter().map(|(bit, _, _)| self.list(*bit).iter().map(Vec::len).sum::<usize>()).sum()
    }
}

impl PkiStore {
    /// The lists `masks` selects, as they are on disk now (every certificate or CRL of every readable file).
    pub fn trust_lists(&self, masks: TrustListMasks) -> TrustLists {
        let mut out = TrustLists { specified: masks.0 & TrustListMasks::ALL.0, ..Default::default() };
        for (bit, folder, crl) in LISTS {
            if masks.has(bit) {
                *out.list_mut(bit) = self.objects_in(folder, crl);
            }
        }
        out
    }

    fn objects_in(&self, folder: Folder, crl: bool) -> Vec<Vec<u8>> {
        let Ok(entries) = fs::read_dir(self.dir(folder)) else { return Vec::new() };
        let mut paths: Vec<_> =
            entries.flatten().map(|e| e.path()).filter(|p| p.is_file() && has_extension(p, crl)).collect();
        paths.sort();
        paths.iter().filter_map(|p| fs::read(p).ok()).flat_map(|b| der_objects(&b)).collect()
    }

    /// Replaces every list `lists.specified` names with its content; the others stay. Every entry is parsed first:
    /// one that is not a certificate (or CRL) refuses the whole update and changes nothing.
    pub fn replace_trust_lists(&self, lists: &TrustLists) -> Result<(), PkiError> {
        let masks = TrustListMasks(lists.specified);
        for (bit, _, crl) in LISTS {
            if !masks.has(bit) {
                continue;
            }
            for (i, der) in lists.list(bit).iter().enumerate() {
                let parsed = if crl { Crl::from_der(der).map(|_| ()) } else { Cert::from_der(der).map(|_| ()) };
                parsed.map_err(|e| PkiError::Invalid(format!("trust list entry {i}: {e}")))?;
            }
        }
        for (bit, folder, crl) in LISTS {
            if !masks.has(bit) {
                continue;
            }
            let dir = self.dir(folder);
            let keep: Vec<String> = lists
                .list(bit)
                .iter()
                .map(|der| {
                    let name = format!("{} [{}].der", if crl { "crl" } else { "cert" }, hex(&sha1(der)));
                    write_atomic(&dir, &name, der).map(|_| name)
                })
                .collect::<Result<_, _>>()?;
            // Old files go only after the new ones are in place, so a crash leaves a superset, never a gap.
            let entries = fs::read_dir(&dir).map_err(|source| PkiError::Io { path: dir.clone(), source })?;
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_file() && has_extension(&path, crl) && !keep.contains(&name) {
                    fs::remove_file(&path).map_err(|source| PkiError::Io { path: path.clone(), source })?;
                }
            }
        }
        tracing::info!(specified = lists.specified, "trust lists replaced");
        Ok(())
    }

    /// Adds one certificate: to trusted/certs when `trusted`, else to issuer/certs.
    pub fn add_certificate(&self, cert_der: &[u8], trusted: bool) -> Result<(), PkiError> {
        let folder = if trusted { Folder::TrustedCerts } else { Folder::IssuerCerts };
        self.write_cert(folder, cert_der).map(|_| ())
    }

    /// Removes the certificate whose SHA-1 thumbprint is `thumbprint_hex` (case-insensitive) from trusted/certs or
    /// issuer/certs, and, when it is a CA, the CRLs it issued from the matching CRL folder. Returns false when no
    /// such certificate is there. A file holding several certificates is rewritten without the one removed.
    pub fn remove_certificate(&self, thumbprint_hex: &str, trusted: bool) -> Result<bool, PkiError> {
        let wanted = thumbprint_hex.trim().to_ascii_lowercase();
        let (folder, crl_folder) =
            if trusted { (Folder::TrustedCerts, Folder::TrustedCrl) } else { (Folder::IssuerCerts, Folder::IssuerCrl) };
        let dir = self.dir(folder);
        let entries = fs::read_dir(&dir).map_err(|source| PkiError::Io { path: dir.clone(), source })?;
        let mut removed: Option<Cert> = None;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() || !has_extension(&path, false) {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let objects = der_objects(&bytes);
            let certs: Vec<(Vec<u8>, Option<Cert>)> =
                objects.into_iter().map(|der| (der.clone(), Cert::from_der(&der).ok())).collect();
            let Some(hit) = certs.iter().position(|(_, c)| c.as_ref().is_some_and(|c| hex(&c.thumbprint()) == wanted))
            else {
                continue;
            };
            let rest: Vec<&Vec<u8>> =
                certs.iter().enumerate().filter(|(i, _)| *i != hit).map(|(_, (d, _))| d).collect();
            fs::remove_file(&path).map_err(|source| PkiError::Io { path: path.clone(), source })?;
            for der in rest {
                self.write_cert(folder, der)?;
            }
            removed = certs.into_iter().nth(hit).and_then(|(_, c)| c);
            break;
        }
        let Some(cert) = removed else { return Ok(false) };
        if cert.is_ca() {
            let crl_dir = self.dir(crl_folder);
            if let Ok(entries) = fs::read_dir(&crl_dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let issued_by_it = fs::read(&path).ok().is_some_and(|b| {
                        der_objects(&b).iter().any(|d| Crl::from_der(d).is_ok_and(|c| c.may_be_issued_by(&cert)))
                    });
                    if issued_by_it {
                        fs::remove_file(&path).map_err(|source| PkiError::Io { path: path.clone(), source })?;
                    }
                }
            }
        }
        tracing::info!(thumbprint = %wanted, trusted, "certificate removed from the trust list");
        Ok(true)
    }
}
