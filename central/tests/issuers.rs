//! The issuers on real parts: the central's CA with its key in a real vaultd, a real `openssl ca` behind the
//! external plug-in, and device-made self-signed certificates; results checked with `openssl`.

mod common;

use std::time::Duration;

use certvault::csr::CsrRequest;
use certvault::{KeyAlgorithm, KeySelector, KeyStore};
use certvault_central::issuer::{CsrInput, External, IssueRequest, Issuer, SelfSigned, Subject};
use certvault_central::{Central, CentralError};
use common::{openssl, write_pem, OpensslCa, TestVaultd};

fn csr_request(uri: &str) -> CsrRequest {
    CsrRequest {
        common_name: "device app".into(),
        organization: None,
        application_uri: Some(uri.into()),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
    }
}

fn request<'a>(subject: Subject<'a>, uri: &'a str, hosts: &'a [String]) -> IssueRequest<'a> {
    IssueRequest { subject, common_name: "CV-DEV-1 app", application_uri: uri, host_names: hosts, validity_days: 30 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_ca_in_vaultd_issues_opcua_certificates_and_numbered_crls() {
    let ca_vault = TestVaultd::start("CV-CA");
    ca_vault.generate("plant-ca", KeyAlgorithm::Rsa { bits: 2048 });
    let dongle = TestVaultd::start("CV-DEV-1");
    dongle.generate("app", KeyAlgorithm::Rsa { bits: 2048 });
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_db(dir.path()).await;
    let central = Central::new(db).with_crl_dir(dir.path().join("crl"));
    let info = central.create_ca("plant", &ca_vault.key_uri("plant-ca"), "Plant CA", 3650).await.unwrap();
    assert!(!info.key_uri.contains("pin"), "no PIN source in listings: {}", info.key_uri);
    assert!(matches!(
        central.create_ca("plant", &ca_vault.key_uri("plant-ca"), "again", 1).await.unwrap_err(),
        CentralError::Conflict(_)
    ));

    let uri = "urn:certvault:test:device-1";
    let csr = dongle.client().create_csr(&KeySelector::Label("app".into()), &csr_request(uri)).unwrap();
    let hosts = vec!["machine-a.local".to_string(), "127.0.0.1".to_string()];
    let ca = central.ca("plant").await.unwrap();
    let chain = tokio::task::spawn_blocking(move || ca.issue(&request(Subject::Csr(&csr), uri, &hosts)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chain.len(), 2);

    write_pem(&dir.path().join("ca.pem"), "CERTIFICATE", &chain[1]);
    write_pem(&dir.path().join("leaf.pem"), "CERTIFICATE", &chain[0]);
    let ca_pem = dir.path().join("ca.pem").display().to_string();
    let leaf_pem = dir.path().join("leaf.pem").display().to_string();
    let verified = openssl(&["verify", "-CAfile", &ca_pem, &leaf_pem]);
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl(&["x509", "-in", &leaf_pem, "-noout", "-text"]);
    // OPC UA Part 6 §6.2.2: ApplicationUri as a URI name, host names, the four RSA key usages, both EKUs, no CA.
    for needle in [
        "URI:urn:certvault:test:device-1",
        "DNS:machine-a.local",
        "IP Address:127.0.0.1",
        "Digital Signature, Non Repudiation, Key Encipherment, Data Encipherment",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "CA:FALSE",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // The order decides the names, not the CSR: the CSR's DNS name localhost is not in the certificate.
    assert!(!text.contains("DNS:localhost"), "{text}");

    // A CSR whose signature does not verify is refused.
    let mut bad = dongle.client().create_csr(&KeySelector::Label("app".into()), &csr_request(uri)).unwrap();
    let n = bad.len();
    bad[n - 5] ^= 0x55;
    let ca = central.ca("plant").await.unwrap();
    let hosts: Vec<String> = vec![];
    let err = tokio::task::spawn_blocking(move || ca.issue(&request(Subject::Csr(&bad), uri, &hosts)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");

    // CRLs: numbered 1, 2, ...; published to the directory; readable by openssl and signed by the CA.
    let first = central.publish_crl("plant").await.unwrap();
    let second = central.publish_crl("plant").await.unwrap();
    assert_ne!(first, second);
    let crl_file = dir.path().join("crl/plant.crl");
    assert_eq!(std::fs::read(&crl_file).unwrap(), second);
    let text = openssl(&["crl", "-inform", "DER", "-in", &crl_file.display().to_string(), "-noout", "-text"]);
    assert!(text.contains("X509v3 CRL Number: \n                2"), "{text}");
    let check =
        openssl(&["crl", "-inform", "DER", "-in", &crl_file.display().to_string(), "-noout", "-CAfile", &ca_pem]);
    let _ = check; // openssl exits non-zero when the signature does not verify; openssl() asserts success.
    assert_eq!(central.cas().await.unwrap()[0].crl_number, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_plugin_wraps_openssl_ca_and_reports_failures() {
    let dongle = TestVaultd::start("CV-DEV-2");
    dongle.generate("app", KeyAlgorithm::Rsa { bits: 2048 });
    let uri = "urn:certvault:test:external";
    let csr = dongle.client().create_csr(&KeySelector::Label("app".into()), &csr_request(uri)).unwrap();
    let ca = OpensslCa::new();
    let hosts: Vec<String> = vec![];

    let external = ca.external("openssl");
    let chain = external.issue(&request(Subject::Csr(&csr), uri, &hosts)).unwrap();
    assert_eq!(chain.len(), 2, "leaf and CA");
    let dir = tempfile::tempdir().unwrap();
    write_pem(&dir.path().join("leaf.pem"), "CERTIFICATE", &chain[0]);
    let leaf = dir.path().join("leaf.pem").display().to_string();
    let out = openssl(&["verify", "-CAfile", &ca.ca_pem().display().to_string(), &leaf]);
    assert!(out.contains(": OK"), "{out}");
    let text = openssl(&["x509", "-in", &leaf, "-noout", "-text"]);
    assert!(text.contains(&format!("URI:{uri}")), "openssl ca copied the CSR's ApplicationUri: {text}");

    // CSR on stdin: the same CA through a wrapper that reads it from there.
    let d = ca.dir.path().display();
    let stdin_plugin = External {
        name: "stdin".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            format!("cat > {d}/in.csr && openssl ca -batch -config {d}/ca.cnf -notext -in {d}/in.csr -out {d}/o.pem 2>/dev/null && cat {d}/o.pem"),
        ],
        csr_input: CsrInput::Stdin,
        timeout_secs: 60,
    };
    assert_eq!(stdin_plugin.issue(&request(Subject::Csr(&csr), uri, &hosts)).unwrap().len(), 1);

    let failing = External {
        name: "failing".into(),
        command: vec!["sh".into(), "-c".into(), "echo 'the CA is closed' >&2; exit 3".into()],
        csr_input: CsrInput::Stdin,
        timeout_secs: 10,
    };
    let err = failing.issue(&request(Subject::Csr(&csr), uri, &hosts)).unwrap_err();
    assert!(matches!(err, CentralError::Issuer { .. }) && err.to_string().contains("the CA is closed"), "{err}");

    let garbage = External {
        name: "garbage".into(),
        command: vec!["sh".into(), "-c".into(), "cat >/dev/null; echo not a certificate".into()],
        csr_input: CsrInput::Stdin,
        timeout_secs: 10,
    };
    let err = garbage.issue(&request(Subject::Csr(&csr), uri, &hosts)).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let slow = External {
        name: "slow".into(),
        command: vec!["sh".into(), "-c".into(), "sleep 30; echo late".into(), "sh".into(), "{csr}".into()],
        csr_input: CsrInput::File,
        timeout_secs: 1,
    };
    let err = slow.issue(&request(Subject::Csr(&csr), uri, &hosts)).unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");

    let missing = External { name: "missing".into(), command: vec!["/nonexistent/ca".into()], ..garbage.clone() };
    assert!(missing.issue(&request(Subject::Csr(&csr), uri, &hosts)).unwrap_err().to_string().contains("cannot start"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificates_are_checked_not_trusted_blindly() {
    let dongle = TestVaultd::start("CV-DEV-3");
    let key = dongle.generate("app", KeyAlgorithm::Rsa { bits: 2048 });
    let uri = "urn:certvault:test:self";
    let cert = certvault::csr::self_signed(key.as_ref(), &csr_request(uri), Duration::from_secs(10 * 86_400)).unwrap();
    let hosts: Vec<String> = vec![];
    let chain = SelfSigned.issue(&request(Subject::Certificate(&cert), uri, &hosts)).unwrap();
    assert_eq!(chain, vec![cert.clone()]);

    // Tampered: the signature no longer verifies.
    let mut bad = cert.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x01;
    assert!(SelfSigned.issue(&request(Subject::Certificate(&bad), uri, &hosts)).is_err());
    // Longer than ordered.
    let long = certvault::csr::self_signed(key.as_ref(), &csr_request(uri), Duration::from_secs(400 * 86_400)).unwrap();
    let err = SelfSigned.issue(&request(Subject::Certificate(&long), uri, &hosts)).unwrap_err();
    assert!(err.to_string().contains("outlives"), "{err}");
    // A CSR is not a certificate.
    let csr = dongle.client().create_csr(&KeySelector::Label("app".into()), &csr_request(uri)).unwrap();
    assert!(SelfSigned.issue(&request(Subject::Csr(&csr), uri, &hosts)).is_err());
}
