//! The vault demo, one command (`scripts/demo`): a dongle container served by vaultd, keys made inside it and on
//! a PKCS#11 token, a signature made and checked, certificates from a CA whose key is in the vault, and mutual TLS
//! where neither side's private key is in this process. Everything runs in a temporary directory and is removed at
//! the end; the exit code is 0 only if every step held.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use certvault::container::{Container, KdfParams};
use certvault::csr::{self, CsrRequest};
use certvault::pkcs11::Pkcs11Token;
use certvault::tls::{self, SwappableCertifiedKey};
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SharedKey, SignAlg};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PIN: &[u8] = b"246810";
const ADMIN_PIN: &[u8] = b"demo-admin-pin";
const SOFTHSM: &str = certvault::pkcs11::softhsm::MODULE;
const HANDSHAKES: usize = 3;

/// Kills vaultd when the demo ends, however it ends.
struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn vaultd_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VAULTD_BIN") {
        return Ok(PathBuf::from(p));
    }
    // target/<profile>/examples/demo -> target/<profile>/vaultd
    let exe = std::env::current_exe()?;
    let p = exe.parent().and_then(Path::parent).map(|d| d.join("vaultd")).context("locating vaultd")?;
    ensure!(p.exists(), "{} is missing: build it with `cargo build --release -p certvault --bins`", p.display());
    Ok(p)
}

fn start_vaultd(container: &Path, socket: &Path) -> Result<Daemon> {
    let args = ["--container".as_ref(), container.as_os_str()];
    let child = certvault::daemon::launch::start_vaultd(&vaultd_binary()?, &args, socket, Duration::from_secs(10))?;
    Ok(Daemon(child))
}

/// A SoftHSM2 token in `dir`, if SoftHSM2 is installed.
fn softhsm_token(dir: &Path) -> Result<Option<(Pkcs11Token, String)>> {
    if !certvault::pkcs11::softhsm::available() {
        return Ok(None);
    }
    let conf = certvault::pkcs11::softhsm::write_config(dir)?;
    // Set before the module is loaded in this process; nothing else runs yet.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    certvault::pkcs11::softhsm::init_token(&conf, "demo-token", "246810", "13579135")?;
    let token = Pkcs11Token::open(Path::new(SOFTHSM), "demo-token", Some(PIN))?;
    Ok(Some((token, format!("pkcs11:token=demo-token;object=demo-client?module-path={SOFTHSM}"))))
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let container = dir.path().join("demo-dongle.cvault");
    let socket = dir.path().join("vaultd.sock");

    step(1, "init: a new emulated dongle (container sealed with AES-256-GCM under an Argon2id key from the PIN)");
    Container::create(&container, "CV-DEMO-0001", PIN, ADMIN_PIN, KdfParams::default(), 5)?;
    println!("    container {}", container.display());
    let _daemon = start_vaultd(&container, &socket)?;
    println!("    vaultd serving it on {}", socket.display());
    let vault = DaemonClient::connect(&socket, None)?;
    vault.login(PIN)?;

    step(2, "keygen: keys made inside the vault (this process never sees them)");
    let server_info = vault.generate("demo-server", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default())?;
    let ca_info = vault.generate("demo-ca", KeyAlgorithm::EcP256, KeyPolicy::default())?;
    let server_key = vault.key(&KeySelector::Label("demo-server".into()))?;
    let ca_key = vault.key(&KeySelector::Label("demo-ca".into()))?;
    println!("    demo-server  {}  vaultd:serial=CV-DEMO-0001;object=demo-server", server_info.algorithm);
    println!("    demo-ca      {}  vaultd:serial=CV-DEMO-0001;object=demo-ca", ca_info.algorithm);
    let (client_key, client_where): (SharedKey, String) = match softhsm_token(dir.path())? {
        Some((token, uri)) => {
            token.generate("demo-client", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default())?;
            (token.key(&KeySelector::Label("demo-client".into()))?, uri)
        }
        None => {
            println!("    (SoftHSM2 is not installed: the client key goes into the vault daemon too)");
            vault.generate("demo-client", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default())?;
            let k = vault.key(&KeySelector::Label("demo-client".into()))?;
            (k, "vaultd:serial=CV-DEMO-0001;object=demo-client".into())
        }
    };
    println!("    demo-client  {}  {client_where}", client_key.info().algorithm);

    step(3, "sign and verify");
    let message = b"certvault demo: a key that is used, never read";
    let signature = server_key.sign(SignAlg::RsaPssSha256, message)?;
    PublicKey::from_spki(&server_info.spki_der)?.verify(SignAlg::RsaPssSha256, message, &signature)?;
    println!("    RSA-PSS-SHA256 signature of {} bytes verifies with the public key", signature.len());
    ensure!(
        PublicKey::from_spki(&server_info.spki_der)?.verify(SignAlg::RsaPssSha256, b"tampered", &signature).is_err(),
        "a tampered message must not verify"
    );
    println!("    and does not verify for a tampered message");

    step(4, "certificates: a CA whose key is in the vault issues both leaf certificates");
    let ca_cert = csr::self_signed_ca(ca_key.as_ref(), "certvault demo CA", Duration::from_secs(86_400))?;
    let leaf = |key: &SharedKey, cn: &str| -> Result<Vec<CertificateDer<'static>>> {
        let req = CsrRequest {
            common_name: cn.into(),
            application_uri: Some(format!("urn:certvault:demo:{cn}")),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ..Default::default()
        };
        let der = csr::issue(ca_key.as_ref(), &ca_cert, &key.info().spki_der, &req, Duration::from_secs(86_400))?;
        Ok(vec![CertificateDer::from(der), CertificateDer::from(ca_cert.clone())])
    };
    let server_chain = leaf(&server_key, "demo-server")?;
    let client_chain = leaf(&client_key, "demo-client")?;
    vault.store_cert_chain(
        &KeySelector::Label("demo-server".into()),
        server_chain.iter().map(|c| c.to_vec()).collect(),
    )?;
    println!("    server certificate stored in the vault with its key");

    step(5, "mutual TLS 1.3 on 127.0.0.1, both private keys outside this process");
    let before = count_signs(&vault, "demo-server")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let negotiated = rt.block_on(mutual_tls(server_key, server_chain, client_key, client_chain, &ca_cert))?;
    let signed = count_signs(&vault, "demo-server")? - before;
    let algs: std::collections::BTreeSet<String> = vault
        .audit(1, 100_000)?
        .into_iter()
        .filter(|r| r.op == "sign" && r.key.as_deref() == Some("demo-server"))
        .filter_map(|r| r.detail)
        .collect();
    println!("    {HANDSHAKES} full handshakes ({negotiated}); the server key signed with {algs:?}");
    ensure!(signed == HANDSHAKES, "vaultd's audit log counted {signed} server signatures, expected {HANDSHAKES}");
    println!("    vaultd's audit log counted {signed} server signatures, one per handshake");

    step(6, "audit: every key use is in a hash-chained log");
    let log = certvault::container::sidecar(&container, "audit");
    let verified = certvault::audit::verify(&log, "CV-DEMO-0001")?;
    println!("    {} records, chain intact ({})", verified.records, log.display());
    println!("\ndemo complete: every step held.");
    Ok(())
}

fn count_signs(vault: &DaemonClient, label: &str) -> Result<usize> {
    Ok(vault.audit(1, 100_000)?.iter().filter(|r| r.op == "sign" && r.ok && r.key.as_deref() == Some(label)).count())
}

async fn mutual_tls(
    server_key: SharedKey,
    server_chain: Vec<CertificateDer<'static>>,
    client_key: SharedKey,
    client_chain: Vec<CertificateDer<'static>>,
    ca_cert: &[u8],
) -> Result<String> {
    let provider = tls::default_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_cert.to_vec()))?;
    let versions = &[&rustls::version::TLS13];
    let server_resolver = Arc::new(SwappableCertifiedKey::new(server_chain, server_key)?);
    let client_resolver = Arc::new(SwappableCertifiedKey::new(client_chain, client_key)?);
    let mut scfg = tls::server_config(provider.clone(), server_resolver, roots.clone(), versions)?;
    let mut ccfg = tls::client_config(provider, roots, client_resolver, versions)?;
    // No resumption: every handshake must use both keys.
    scfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    scfg.send_tls13_tickets = 0;
    ccfg.resumption = rustls::client::Resumption::disabled();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(scfg));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ccfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        for _ in 0..HANDSHAKES {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(b"pong").await?;
            tls.shutdown().await?;
        }
        anyhow::Ok(())
    });
    let mut negotiated = String::new();
    for _ in 0..HANDSHAKES {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        if &buf != b"pong" {
            bail!("unexpected reply {buf:?}");
        }
        let (_, conn) = tls.get_ref();
        let peer = conn.peer_certificates().map_or(0, |c| c.len());
        ensure!(peer == 2, "the server presented {peer} certificates, expected leaf and CA");
        negotiated = format!(
            "{:?}, {:?}",
            conn.protocol_version().context("no protocol version")?,
            conn.negotiated_cipher_suite().context("no cipher suite")?.suite()
        );
    }
    server.await??;
    Ok(negotiated)
}
