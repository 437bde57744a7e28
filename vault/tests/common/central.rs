//! The central's part, as tests play it: a CA key and an unwrap-only backup key inside a real vaultd, issuing
//! certificates and sealing keys it makes there.

use std::time::Duration;

use certvault::csr::{self, CsrRequest};
use certvault::provision::{KeyMaker, KeyOrigin, Recipient, Request, Update, UpdateItem};
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SharedKey};

use super::vaultd::Vaultd;

/// Validity of test certificates.
pub const DAY: Duration = Duration::from_secs(86_400);

/// The central's side, as a test plays it: a CA key and a backup key inside its own vaultd.
pub struct Central {
    _vault: Vaultd,
    /// The central's vault.
    pub client: DaemonClient,
    /// The CA key (signs updates and certificates).
    pub ca_key: SharedKey,
    /// The CA certificate devices pin.
    pub ca_cert: Vec<u8>,
    /// The unwrap-only backup key.
    pub backup_spki: Vec<u8>,
}

impl Central {
    /// A CA key and a backup key in a fresh vaultd.
    pub fn start() -> Central {
        let vault = Vaultd::start("CENTRAL-1");
        let client = vault.client();
        client.generate("ca", KeyAlgorithm::EcP256, KeyPolicy::default()).unwrap();
        let ca_key = client.key(&KeySelector::Label("ca".into())).unwrap();
        let ca_cert = csr::self_signed_ca(ca_key.as_ref(), "certvault test central", DAY).unwrap();
        let backup = client
            .generate("backup", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy { unwrap_only: true, ..Default::default() })
            .unwrap();
        Central { _vault: vault, client, ca_key, ca_cert, backup_spki: backup.spki_der }
    }

    /// Issues every item of a verified request; returns the update document and the backup copies of made keys.
    pub fn answer(&self, req: &Request) -> (Update, Vec<Vec<u8>>) {
        let mut items = Vec::new();
        let mut backups = Vec::new();
        for item in &req.items {
            let (chain, sealed_key) = match item.key_origin {
                KeyOrigin::Device => {
                    let leaf =
                        csr::issue_from_csr(self.ca_key.as_ref(), &self.ca_cert, item.csr.as_ref().unwrap(), DAY)
                            .unwrap();
                    (vec![leaf, self.ca_cert.clone()], None)
                }
                KeyOrigin::SelfSigned => (vec![item.certificate.clone().unwrap()], None),
                KeyOrigin::Central => {
                    let made = self
                        .client
                        .generate_sealed_to(
                            item.algorithm,
                            &[req.transport_recipient(), Recipient::new(self.backup_spki.clone())],
                        )
                        .unwrap();
                    let subject = CsrRequest {
                        common_name: item.label.clone(),
                        application_uri: Some(item.application_uri.clone()),
                        dns_names: item.hosts.clone(),
                        ..Default::default()
                    };
                    let leaf = csr::issue(self.ca_key.as_ref(), &self.ca_cert, &made.spki, &subject, DAY).unwrap();
                    backups.push(made.sealed[1].to_vec());
                    (vec![leaf, self.ca_cert.clone()], Some(made.sealed[0].to_vec()))
                }
            };
            items.push(UpdateItem { label: item.label.clone(), chain, sealed_key });
        }
        (Update::new(req.serial.clone(), req.nonce.clone(), req.counter, items), backups)
    }

    /// Signs an update as the central.
    pub fn sign(&self, u: &Update) -> Vec<u8> {
        u.sign(self.ca_key.as_ref(), std::slice::from_ref(&self.ca_cert)).unwrap()
    }
}
