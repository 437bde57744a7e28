//! Validation tests over certificates, CAs and CRLs made at run time in temporary directories.

use std::slice::from_ref;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use certvault::csr::{self, CsrRequest, PublicOnly, RcgenKey};
use certvault::soft::{generate_pkcs8, SoftKey};
use certvault::{KeyAlgorithm, KeyPolicy, VaultKey};
use opcua_types::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

use super::cert::{hex, sha1};
use super::*;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const URI: &str = "urn:certvault:test:peer";

/// RSA key generation costs tens of milliseconds, so the tests share a small pool; a chain never reuses a key.
fn key(i: usize) -> &'static SoftKey {
    static POOL: OnceLock<Vec<SoftKey>> = OnceLock::new();
    &POOL.get_or_init(|| {
        (0..6)
            .map(|n| {
                let pkcs8 = generate_pkcs8(KeyAlgorithm::Rsa { bits: 2048 }).expect("keygen");
                SoftKey::from_pkcs8(pkcs8, vec![n], format!("k{n}"), true, KeyPolicy::default()).expect("key")
            })
            .collect()
    })[i]
}

fn spki(k: &SoftKey) -> Vec<u8> {
    k.info().spki_der.clone()
}

fn request(cn: &str) -> CsrRequest {
    CsrRequest {
        common_name: cn.into(),
        organization: Some("certvault tests".into()),
        application_uri: Some(URI.into()),
        dns_names: vec!["peer.example".into()],
        ip_addresses: vec!["192.0.2.7".parse().unwrap()],
    }
}

fn self_signed_leaf(k: &SoftKey) -> Vec<u8> {
    csr::self_signed(k, &request("Peer"), YEAR).unwrap()
}

fn root_ca(k: &SoftKey, cn: &str) -> Vec<u8> {
    csr::self_signed_ca(k, cn, YEAR).unwrap()
}

fn issuer<'a>(ca_key: &'a SoftKey, ca_der: &[u8]) -> Issuer<'static, RcgenKey<'a>> {
    Issuer::from_ca_cert_der(&ca_der.to_vec().into(), RcgenKey::new(ca_key).unwrap()).unwrap()
}

/// Issues a certificate for `subject` with the application-instance profile, edited by `edit`.
fn issue_with(
    ca_key: &SoftKey,
    ca_der: &[u8],
    subject_spki: &[u8],
    edit: impl FnOnce(&mut CertificateParams),
) -> Vec<u8> {
    let subject = PublicOnly::from_spki(subject_spki).unwrap();
    let alg = certvault::PublicKey::from_spki(subject_spki).unwrap().algorithm();
    let mut params = request("Peer").to_params(alg).unwrap();
    csr::set_validity(&mut params, YEAR);
    edit(&mut params);
    params.signed_by(&subject, &issuer(ca_key, ca_der)).unwrap().der().to_vec()
}

fn intermediate_ca(ca_key: &SoftKey, ca_der: &[u8], sub_key: &SoftKey, cn: &str) -> Vec<u8> {
    let subject = PublicOnly::from_spki(&spki(sub_key)).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    csr::set_validity(&mut params, YEAR);
    params.signed_by(&subject, &issuer(ca_key, ca_der)).unwrap().der().to_vec()
}

fn crl(ca_key: &SoftKey, ca_der: &[u8], revoked: &[&[u8]]) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|der| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&Cert::from_der(der).unwrap().serial),
                revocation_time: now - time::Duration::minutes(5),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params.signed_by(&issuer(ca_key, ca_der)).unwrap().der().to_vec()
}

fn store() -> (tempfile::TempDir, PkiStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = PkiStore::create_or_open(dir.path().join("pki")).unwrap();
    (dir, store)
}

fn ctx() -> ValidationContext {
    ValidationContext::new(Role::Client, PolicyLimits::RSA_SHA256).with_application_uri(URI)
}

fn code(r: Result<ValidatedCert, CertError>) -> StatusCode {
    match r {
        Ok(_) => StatusCode::Good,
        Err(e) => e.status_code(),
    }
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// CA(root) -> leaf, root trusted, with the root's CRL listing `revoked`.
struct OneCa {
    root: Vec<u8>,
    leaf: Vec<u8>,
}

fn one_ca() -> OneCa {
    let root = root_ca(key(0), "Test Root CA");
    let leaf = csr::issue(key(0), &root, &spki(key(1)), &request("Peer"), YEAR).unwrap();
    OneCa { root, leaf }
}

#[test]
fn layout_is_created() {
    let (_d, s) = store();
    for rel in
        ["own/certs", "own/private", "trusted/certs", "trusted/crl", "issuer/certs", "issuer/crl", "rejected/certs"]
    {
        assert!(s.root().join(rel).is_dir(), "{rel}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(s.root()).unwrap().permissions().mode() & 0o777, 0o700);
    }
}

#[test]
fn trusted_self_signed_leaf_passes() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    s.trust(&leaf).unwrap();
    let ok = s.validate(from_ref(&leaf), &ctx().with_host("peer.example")).unwrap();
    assert_eq!(ok.trusted_by(), TrustAnchor::Leaf);
    assert_eq!(ok.leaf().der(), &leaf[..]);
    assert!(ok.suppressed().is_empty());
    // IP addresses match too.
    assert!(s.validate(&[leaf], &ctx().with_host("192.0.2.7")).is_ok());
}

#[test]
fn untrusted_is_rejected_then_trusted_by_a_file_move() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    let err = s.validate(from_ref(&leaf), &ctx()).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateUntrusted);
    assert_eq!(err.wire_status_code(), StatusCode::BadSecurityChecksFailed);
    let thumb = hex(&sha1(&leaf));
    let rejected = files(&s.rejected_certs_dir());
    assert_eq!(rejected, vec![format!("Peer [{thumb}].der")]);
    // A second refusal does not duplicate the file.
    assert!(s.validate(from_ref(&leaf), &ctx()).is_err());
    assert_eq!(files(&s.rejected_certs_dir()).len(), 1);
    assert_eq!(s.rejected_certificates().len(), 1);

    // The operator trusts it by moving the file; the same store picks it up.
    std::fs::rename(s.rejected_certs_dir().join(&rejected[0]), s.trusted_certs_dir().join(&rejected[0])).unwrap();
    assert!(s.validate(from_ref(&leaf), &ctx()).is_ok());
    // And distrusts it by removing it.
    std::fs::remove_file(s.trusted_certs_dir().join(&rejected[0])).unwrap();
    assert_eq!(code(s.evaluate(&[leaf], &ctx())), StatusCode::BadCertificateUntrusted);
}

#[test]
fn pem_files_are_read() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    std::fs::write(s.trusted_certs_dir().join("peer.pem"), pem("CERTIFICATE", &leaf)).unwrap();
    // Garbage next to it is skipped, not fatal.
    std::fs::write(s.trusted_certs_dir().join("junk.der"), b"\x30\x03abc").unwrap();
    std::fs::write(s.trusted_certs_dir().join("junk.pem"), b"not pem at all").unwrap();
    assert!(s.validate(&[leaf], &ctx()).is_ok());
}

fn base64_lines(der: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in der.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s.as_bytes().chunks(64).map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\n")
}

#[test]
fn ca_issued_leaf_with_trusted_ca_and_crl_passes() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    let ok = s.validate(from_ref(&pki.leaf), &ctx()).unwrap();
    assert_eq!(ok.trusted_by(), TrustAnchor::Issuer(1));
    assert_eq!(ok.chain().len(), 2);
    // The CA may also come with the chain, and the CRL may sit in issuer/crl.
    let (_d2, s2) = store();
    s2.trust(&pki.root).unwrap();
    s2.add_crl(&crl(key(0), &pki.root, &[]), false).unwrap();
    assert!(s2.validate(&[pki.leaf, pki.root], &ctx()).is_ok());
}

#[test]
fn missing_crl_is_revocation_unknown_unless_suppressed() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    let err = s.validate(from_ref(&pki.leaf), &ctx()).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateRevocationUnknown);
    assert!(!err.should_reject());
    assert!(files(&s.rejected_certs_dir()).is_empty());
    let opts = ValidationOptions { suppress_revocation_unknown: true, ..Default::default() };
    let ok = s.validate(&[pki.leaf], &ctx().with_options(opts)).unwrap();
    assert_eq!(ok.suppressed().len(), 1);
    assert_eq!(ok.suppressed()[0].status_code(), StatusCode::BadCertificateRevocationUnknown);
}

#[test]
fn crl_signed_by_another_key_does_not_count() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    // Same issuer name, other key: an impostor CRL.
    let impostor = root_ca(key(2), "Test Root CA");
    s.add_crl(&crl(key(2), &impostor, &[]), true).unwrap();
    assert_eq!(code(s.validate(&[pki.leaf], &ctx())), StatusCode::BadCertificateRevocationUnknown);
}

#[test]
fn revoked_leaf() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[&pki.leaf]), true).unwrap();
    let opts = ValidationOptions { suppress_revocation_unknown: true, ..Default::default() };
    let err = s.validate(&[pki.leaf], &ctx().with_options(opts)).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateRevoked);
    assert_eq!(err.wire_status_code(), StatusCode::BadCertificateRevoked);
}

/// root -> intermediate -> leaf.
fn two_level() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let root = root_ca(key(0), "Test Root CA");
    let inter = intermediate_ca(key(0), &root, key(1), "Test Intermediate CA");
    let leaf = csr::issue(key(1), &inter, &spki(key(2)), &request("Peer"), YEAR).unwrap();
    (root, inter, leaf)
}

#[test]
fn intermediate_chain_passes_and_revoked_intermediate_fails() {
    let (_d, s) = store();
    let (root, inter, leaf) = two_level();
    s.trust(&root).unwrap();
    s.add_crl(&crl(key(1), &inter, &[]), false).unwrap();
    let root_crl = s.add_crl(&crl(key(0), &root, &[]), true).unwrap();
    let ok = s.validate(&[leaf.clone(), inter.clone()], &ctx()).unwrap();
    assert_eq!(ok.chain().len(), 3);
    assert_eq!(ok.trusted_by(), TrustAnchor::Issuer(2));

    // The root's CRL missing: the intermediate's status is unknown.
    std::fs::remove_file(&root_crl).unwrap();
    assert_eq!(
        code(s.validate(&[leaf.clone(), inter.clone()], &ctx())),
        StatusCode::BadCertificateIssuerRevocationUnknown
    );

    s.add_crl(&crl(key(0), &root, &[&inter]), true).unwrap();
    let err = s.validate(&[leaf, inter], &ctx()).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateIssuerRevoked);
}

#[test]
fn missing_intermediate_is_chain_incomplete() {
    let (_d, s) = store();
    let (root, _inter, leaf) = two_level();
    s.trust(&root).unwrap();
    let err = s.validate(from_ref(&leaf), &ctx()).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateChainIncomplete);
    assert_eq!(err.wire_status_code(), StatusCode::BadSecurityChecksFailed);
    assert!(err.should_reject());
    assert_eq!(files(&s.rejected_certs_dir()).len(), 1);
}

#[test]
fn intermediate_from_issuer_folder_completes_the_chain() {
    let (_d, s) = store();
    let (root, inter, leaf) = two_level();
    s.trust(&root).unwrap();
    s.add_issuer(&inter).unwrap();
    s.add_crl(&crl(key(1), &inter, &[]), false).unwrap();
    s.add_crl(&crl(key(0), &root, &[]), true).unwrap();
    assert!(s.validate(&[leaf], &ctx()).is_ok());
}

#[test]
fn issuer_folder_alone_does_not_trust() {
    let (_d, s) = store();
    let pki = one_ca();
    s.add_issuer(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), false).unwrap();
    assert_eq!(code(s.validate(&[pki.leaf], &ctx())), StatusCode::BadCertificateUntrusted);
}

#[test]
fn expired_leaf_and_expired_issuer() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    s.trust(&leaf).unwrap();
    let later = SystemTime::now() + 2 * YEAR;
    let err = s.validate(from_ref(&leaf), &ctx().at(later)).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateTimeInvalid);
    let before = SystemTime::now() - 2 * YEAR;
    assert_eq!(code(s.validate(from_ref(&leaf), &ctx().at(before))), StatusCode::BadCertificateTimeInvalid);
    let opts = ValidationOptions { suppress_time_invalid: true, ..Default::default() };
    assert!(s.validate(&[leaf], &ctx().at(later).with_options(opts)).is_ok());

    // A CA expiring before its leaf.
    let (_d2, s2) = store();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Short CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(10);
    params.not_after = now - time::Duration::days(1);
    let ca = params.self_signed(&RcgenKey::new(key(0)).unwrap()).unwrap().der().to_vec();
    let leaf = issue_with(key(0), &ca, &spki(key(1)), |_| {});
    s2.trust(&ca).unwrap();
    s2.add_crl(&crl(key(0), &ca, &[]), true).unwrap();
    assert_eq!(code(s2.validate(&[leaf], &ctx())), StatusCode::BadCertificateIssuerTimeInvalid);
}

#[test]
fn wrong_application_uri() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    s.trust(&leaf).unwrap();
    let c = ValidationContext::new(Role::Client, PolicyLimits::RSA_SHA256).with_application_uri("urn:someone:else");
    let err = s.validate(from_ref(&leaf), &c).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateUriInvalid);
    assert!(err.to_string().contains("urn:someone:else"), "{err}");
    let opts = ValidationOptions { suppress_uri_invalid: true, ..Default::default() };
    assert!(s.validate(&[leaf], &c.with_options(opts)).is_ok());
}

#[test]
fn wrong_host_name() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    s.trust(&leaf).unwrap();
    let c = ValidationContext::new(Role::Server, PolicyLimits::RSA_SHA256).with_host("other.example");
    assert_eq!(code(s.validate(from_ref(&leaf), &c)), StatusCode::BadCertificateHostNameInvalid);
    assert!(s.validate(from_ref(&leaf), &c.clone().with_host("PEER.example.")).is_ok());
    let opts = ValidationOptions { suppress_host_name_invalid: true, ..Default::default() };
    assert!(s.validate(&[leaf], &c.with_options(opts)).is_ok());
}

#[test]
fn tampered_signature_is_refused() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    s.trust(&leaf).unwrap();
    let mut bad = leaf.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = s.validate(from_ref(&bad), &ctx()).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadSecurityChecksFailed);
    assert!(!err.should_reject());

    // A CA-issued leaf with a flipped bit inside the signed part.
    let (_d2, s2) = store();
    let pki = one_ca();
    s2.trust(&pki.root).unwrap();
    s2.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    let mut bad = pki.leaf.clone();
    let cn = bad.windows(4).position(|w| w == b"Peer").unwrap();
    bad[cn] = b'Q';
    assert_eq!(code(s2.validate(&[bad], &ctx())), StatusCode::BadSecurityChecksFailed);
}

/// A DER SubjectPublicKeyInfo for an RSA key of 1024 bits. Only the public half is needed: the certificate is signed
/// by a 2048-bit CA and the policy check is about the leaf's key length (AWS-LC refuses to make 1024-bit keys).
fn rsa1024_spki() -> Vec<u8> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        match body.len() {
            n if n < 0x80 => v.push(n as u8),
            n if n < 0x100 => v.extend([0x81, n as u8]),
            n => v.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        v.extend_from_slice(body);
        v
    }
    let mut n = vec![0x00, 0xc3];
    n.extend((0..127).map(|i| (i * 37 + 11) as u8));
    let last = n.len() - 1;
    n[last] |= 1;
    let rsa_key = tlv(0x30, &[tlv(0x02, &n), tlv(0x02, &[0x01, 0x00, 0x01])].concat());
    let alg =
        tlv(0x30, &[tlv(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]), vec![0x05, 0x00]].concat());
    tlv(0x30, &[alg, tlv(0x03, &[&[0u8][..], &rsa_key].concat())].concat())
}

#[test]
fn short_rsa_key_fails_the_policy() {
    let (_d, s) = store();
    let pki = one_ca();
    let weak = csr::issue(key(0), &pki.root, &rsa1024_spki(), &request("Weak"), YEAR).unwrap();
    assert_eq!(Cert::from_der(&weak).unwrap().key_algorithm(), Some(KeyAlgorithm::Rsa { bits: 1024 }));
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    let err = s.validate(from_ref(&weak), &ctx()).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificatePolicyCheckFailed);
    assert!(err.to_string().contains("1024"), "{err}");
    // The legacy policies take 1024..=2048.
    let legacy = ValidationContext::new(Role::Client, PolicyLimits::RSA_LEGACY).with_application_uri(URI);
    assert!(s.validate(&[weak], &legacy).is_ok());
}

#[test]
fn wrong_extended_key_usage() {
    let (_d, s) = store();
    let pki = one_ca();
    let client_only = issue_with(key(0), &pki.root, &spki(key(1)), |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    let as_server = ValidationContext::new(Role::Server, PolicyLimits::RSA_SHA256);
    let err = s.validate(from_ref(&client_only), &as_server).unwrap_err();
    assert_eq!(err.status_code(), StatusCode::BadCertificateUseNotAllowed);
    assert!(s.validate(&[client_only], &ValidationContext::new(Role::Client, PolicyLimits::RSA_SHA256)).is_ok());

    let no_data_enc = issue_with(key(0), &pki.root, &spki(key(1)), |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    });
    assert_eq!(code(s.validate(&[no_data_enc], &ctx())), StatusCode::BadCertificateUseNotAllowed);
}

#[test]
fn end_entity_cannot_act_as_ca() {
    let (_d, s) = store();
    let pki = one_ca();
    // A leaf (CA=false) used to sign another certificate.
    let fake = csr::issue(key(1), &pki.leaf, &spki(key(2)), &request("Below a leaf"), YEAR).unwrap();
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    assert_eq!(code(s.validate(&[fake, pki.leaf], &ctx())), StatusCode::BadCertificateIssuerUseNotAllowed);
}

#[test]
fn garbage_never_panics() {
    let (_d, s) = store();
    let leaf = self_signed_leaf(key(0));
    s.trust(&leaf).unwrap();
    assert_eq!(code(s.validate(&[], &ctx())), StatusCode::BadCertificateInvalid);
    assert_eq!(code(s.validate(&[vec![]], &ctx())), StatusCode::BadCertificateInvalid);
    for cut in [1, 2, 3, 4, 10, 100, leaf.len() / 2, leaf.len() - 1] {
        assert_eq!(code(s.validate(&[leaf[..cut].to_vec()], &ctx())), StatusCode::BadCertificateInvalid, "cut {cut}");
    }
    let mut trailing = leaf.clone();
    trailing.push(0);
    assert_eq!(code(s.validate(&[trailing], &ctx())), StatusCode::BadCertificateInvalid);
    // Pseudo-random bytes and bit flips all over the certificate: any status, never a panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for len in [0usize, 1, 5, 64, 300, 2000] {
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        assert!(s.validate(from_ref(&bytes), &ctx()).is_err());
        assert!(s.validate(&[leaf.clone(), bytes], &ctx()).is_err());
    }
    for _ in 0..300 {
        let mut m = leaf.clone();
        let i = next() as usize % m.len();
        m[i] ^= 1 << (next() % 8);
        let _ = s.evaluate(&[m], &ctx());
    }
    assert!(Crl::from_der(&leaf).is_err());
    assert!(split_chain(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    // Nothing garbage was written to rejected/.
    assert!(files(&s.rejected_certs_dir()).is_empty());
}

#[test]
fn concatenated_chain_bytestring_is_split() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    let bytes = [pki.leaf.clone(), pki.root.clone()].concat();
    assert_eq!(split_chain(&bytes).unwrap().len(), 2);
    assert_eq!(s.validate(&[bytes], &ctx()).unwrap().chain().len(), 2);
}

#[test]
fn ec_keys_follow_the_policy() {
    let (_d, s) = store();
    let ec = SoftKey::from_pkcs8(
        generate_pkcs8(KeyAlgorithm::EcP256).unwrap(),
        vec![9],
        "ec".into(),
        true,
        KeyPolicy::default(),
    )
    .unwrap();
    let leaf = csr::self_signed(&ec, &request("EC peer"), YEAR).unwrap();
    s.trust(&leaf).unwrap();
    assert_eq!(code(s.validate(from_ref(&leaf), &ctx())), StatusCode::BadCertificatePolicyCheckFailed);
    let ecc = ValidationContext::new(Role::Client, PolicyLimits::ECC_NIST).with_application_uri(URI);
    assert!(s.validate(&[leaf], &ecc).is_ok());
}

#[test]
fn own_certificate_checks() {
    let own = key(3);
    let cert = self_signed_leaf(own);
    let limits = PolicyLimits::RSA_SHA256;
    let hosts = ["peer.example", "192.0.2.7"];
    let ok = check_own_certificate(&cert, &spki(own), URI, &hosts, Role::Server, &limits).unwrap();
    assert_eq!(ok.uris(), [URI.to_string()]);

    let e = check_own_certificate(&cert, &spki(key(4)), URI, &hosts, Role::Server, &limits).unwrap_err();
    assert!(matches!(e, IdentityError::KeyMismatch { .. }), "{e}");
    let e = check_own_certificate(&cert, &spki(own), "urn:other", &hosts, Role::Server, &limits).unwrap_err();
    assert!(matches!(e, IdentityError::UriMissing { .. }), "{e}");
    assert!(e.to_string().contains("urn:other"));
    let e = check_own_certificate(&cert, &spki(own), URI, &["plc.example"], Role::Server, &limits).unwrap_err();
    assert!(matches!(e, IdentityError::HostMissing { .. }), "{e}");
    // Clients need no host names.
    assert!(check_own_certificate(&cert, &spki(own), URI, &["plc.example"], Role::Client, &limits).is_ok());
    let legacy_only = PolicyLimits { min_rsa_bits: 1024, max_rsa_bits: 1024, ..PolicyLimits::RSA_LEGACY };
    let e = check_own_certificate(&cert, &spki(own), URI, &hosts, Role::Server, &legacy_only).unwrap_err();
    assert!(matches!(e, IdentityError::Policy(_)), "{e}");
    let e = check_own_certificate(b"junk", &spki(own), URI, &hosts, Role::Server, &limits).unwrap_err();
    assert!(matches!(e, IdentityError::Invalid(_)), "{e}");

    let no_names = csr::self_signed(
        own,
        &CsrRequest { common_name: "x".into(), application_uri: Some(URI.into()), ..Default::default() },
        YEAR,
    )
    .unwrap();
    let e = check_own_certificate(&no_names, &spki(own), URI, &[], Role::Server, &limits).unwrap_err();
    assert_eq!(e, IdentityError::NoHostNames);
}

#[test]
fn status_code_table() {
    let s = |subject: &str| subject.to_string();
    let cases = [
        (CertError::Invalid { reason: s("x") }, StatusCode::BadCertificateInvalid, StatusCode::BadSecurityChecksFailed),
        (
            CertError::Untrusted { subject: s("x") },
            StatusCode::BadCertificateUntrusted,
            StatusCode::BadSecurityChecksFailed,
        ),
        (
            CertError::Revoked { subject: s("x"), serial: s("01") },
            StatusCode::BadCertificateRevoked,
            StatusCode::BadCertificateRevoked,
        ),
        (
            CertError::UriInvalid { expected: s("a"), found: vec![] },
            StatusCode::BadCertificateUriInvalid,
            StatusCode::BadCertificateUriInvalid,
        ),
    ];
    for (e, local, wire) in cases {
        assert_eq!(e.status_code(), local, "{e}");
        assert_eq!(e.wire_status_code(), wire, "{e}");
    }
}

#[test]
fn unchanged_folders_reuse_the_snapshot() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    let a = s.snapshot();
    let b = s.snapshot();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    let c = s.snapshot();
    assert!(!std::sync::Arc::ptr_eq(&b, &c));
    assert_eq!((c.trusted.len(), c.crls.len()), (1, 1));
}

#[test]
fn unreadable_crl_files_are_skipped() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    let good = crl(key(0), &pki.root, &[]);
    std::fs::write(s.trusted_crl_dir().join("cut.crl"), &good[..good.len() / 2]).unwrap();
    std::fs::write(s.issuer_crl_dir().join("cert.der"), &pki.root).unwrap();
    assert_eq!(code(s.validate(from_ref(&pki.leaf), &ctx())), StatusCode::BadCertificateRevocationUnknown);
    // Flipped bits in a CRL: never a panic, and a CRL whose signature breaks does not count.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = good.clone();
        let i = x as usize % m.len();
        m[i] ^= 1 << ((x >> 32) % 8);
        let _ = Crl::from_der(&m);
    }
    std::fs::write(s.trusted_crl_dir().join("good.pem"), pem("X509 CRL", &good)).unwrap();
    assert!(s.validate(from_ref(&pki.leaf), &ctx()).is_ok());
}

fn pem(label: &str, der: &[u8]) -> String {
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", base64_lines(der))
}

#[test]
fn rejecting_a_chain_bytestring_keeps_only_the_leaf() {
    let (_d, s) = store();
    let pki = one_ca();
    let bytes = [pki.leaf.clone(), pki.root.clone()].concat();
    assert_eq!(code(s.validate(&[bytes], &ctx())), StatusCode::BadCertificateUntrusted);
    let rejected = s.rejected_certificates();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].der(), &pki.leaf[..]);
}

#[test]
fn unknown_critical_extension_is_invalid() {
    let (_d, s) = store();
    let pki = one_ca();
    let odd = issue_with(key(0), &pki.root, &spki(key(1)), |p| {
        let mut ext = rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    s.trust(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), true).unwrap();
    assert_eq!(code(s.validate(&[odd], &ctx())), StatusCode::BadCertificateInvalid);
}

#[test]
fn trusted_leaf_of_an_unknown_ca_is_chain_incomplete() {
    // Part 4 §6.1.3 (1.05): trust needs a chain up to a self-signed root, even for a leaf trusted by itself.
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.leaf).unwrap();
    assert_eq!(code(s.evaluate(from_ref(&pki.leaf), &ctx())), StatusCode::BadCertificateChainIncomplete);
    s.add_issuer(&pki.root).unwrap();
    s.add_crl(&crl(key(0), &pki.root, &[]), false).unwrap();
    assert_eq!(s.evaluate(from_ref(&pki.leaf), &ctx()).unwrap().trusted_by(), TrustAnchor::Leaf);
}

/// A longer mutation run than `garbage_never_panics`: `cargo test -p certvault-opcua -- --ignored mutation_soak`.
#[test]
#[ignore]
fn mutation_soak() {
    let (_d, s) = store();
    let pki = one_ca();
    s.trust(&pki.root).unwrap();
    let good_crl = crl(key(0), &pki.root, &[&pki.leaf]);
    s.add_crl(&good_crl, true).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..100_000u32 {
        let base = if round % 2 == 0 { &pki.leaf } else { &good_crl };
        let mut m = base.clone();
        for _ in 0..1 + next() % 4 {
            let i = next() as usize % m.len();
            match next() % 4 {
                0 => m[i] ^= 1 << (next() % 8),
                1 => m[i] = next() as u8,
                2 => m.truncate(i.max(1)),
                _ => m.insert(i, next() as u8),
            }
        }
        if round % 2 == 0 {
            let _ = s.evaluate(&[m], &ctx());
        } else {
            let _ = Crl::from_der(&m);
        }
    }
}

mod trust_lists {
    use super::*;

    fn store() -> (tempfile::TempDir, PkiStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = PkiStore::create_or_open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn read_replace_add_remove() {
        let (_dir, store) = store();
        let leaf = self_signed_leaf(key(0));
        let ca = root_ca(key(1), "Trust list CA");
        let ca_crl = crl(key(1), &ca, &[]);
        store.trust(&leaf).unwrap();
        store.add_issuer(&ca).unwrap();
        store.add_crl(&ca_crl, false).unwrap();
        let all = store.trust_lists(TrustListMasks::ALL);
        assert_eq!(all.specified, 15);
        assert_eq!(all.trusted_certificates, vec![leaf.clone()]);
        assert_eq!(all.issuer_certificates, vec![ca.clone()]);
        assert_eq!(all.issuer_crls, vec![ca_crl.clone()]);
        let masked = store.trust_lists(TrustListMasks(TrustListMasks::ISSUER_CERTIFICATES));
        assert!(masked.trusted_certificates.is_empty() && masked.issuer_certificates.len() == 1);

        // Replacing the trusted list leaves the issuer lists alone.
        let other = self_signed_leaf(key(2));
        let update = TrustLists {
            specified: TrustListMasks::TRUSTED_CERTIFICATES,
            trusted_certificates: vec![other.clone()],
            ..Default::default()
        };
        store.replace_trust_lists(&update).unwrap();
        let now = store.trust_lists(TrustListMasks::ALL);
        assert_eq!(now.trusted_certificates, vec![other.clone()]);
        assert_eq!(now.issuer_certificates, vec![ca.clone()]);

        // A bad entry changes nothing.
        let bad = TrustLists {
            specified: TrustListMasks::TRUSTED_CERTIFICATES | TrustListMasks::ISSUER_CERTIFICATES,
            trusted_certificates: vec![leaf.clone()],
            issuer_certificates: vec![b"junk".to_vec()],
            ..Default::default()
        };
        assert!(matches!(store.replace_trust_lists(&bad), Err(PkiError::Invalid(_))));
        assert_eq!(store.trust_lists(TrustListMasks::ALL), now);

        // Removing a CA takes its CRLs along; unknown thumbprints are reported.
        assert!(store.remove_certificate(&hex(&sha1(&ca)).to_uppercase(), false).unwrap());
        let after = store.trust_lists(TrustListMasks::ALL);
        assert!(after.issuer_certificates.is_empty() && after.issuer_crls.is_empty());
        assert!(!store.remove_certificate(&hex(&sha1(&ca)), false).unwrap());
        store.add_certificate(&leaf, true).unwrap();
        assert_eq!(store.trust_lists(TrustListMasks::ALL).trusted_certificates.len(), 2);
        assert!(store.add_certificate(b"junk", true).is_err());
    }
}
