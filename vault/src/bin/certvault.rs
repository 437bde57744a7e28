//! `certvault`: the command line of the vault. Makes containers, keys inside them, CSRs and certificates, and
//! reads the audit log. Every key operation runs inside vaultd or on a PKCS#11 token; this program never sees a
//! private key (except the one `import-key` moves in, which it reads from the file the operator names).
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use certvault::container::{self, Container, KdfParams};
use certvault::csr::CsrRequest;
use certvault::daemon::server::{default_socket, ensure_device_keys};
use certvault::provision;
use certvault::provision::device::DeviceVault;
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SignAlg};
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

/// Keys that are used, never read: manage certvault containers, keys and certificates.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug)]
struct ConnArgs {
    /// vaultd's socket.
    #[arg(long, global = true, env = "CERTVAULT_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Serial of the container to use, when vaultd serves several.
    #[arg(long, global = true, env = "CERTVAULT_CONTAINER", value_name = "SERIAL")]
    container: Option<String>,
    /// Use a PKCS#11 token directly instead of vaultd: a `pkcs11:` URI naming the token (and `module-path`).
    #[arg(long, global = true, env = "CERTVAULT_PKCS11", value_name = "URI")]
    pkcs11: Option<certvault::uri::Pkcs11Uri>,
    /// File holding the user PIN (one line). Otherwise $CERTVAULT_PIN.
    #[arg(long, global = true, value_name = "FILE")]
    pin_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new container file (an emulated dongle). Offline: vaultd need not run.
    Init {
        /// The container file to create.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Serial number of the dongle (letters, digits, '-').
        #[arg(long)]
        serial: String,
        /// File with the admin PIN, which unlocks a locked container. Otherwise $CERTVAULT_ADMIN_PIN.
        #[arg(long, value_name = "FILE")]
        admin_pin_file: Option<PathBuf>,
        /// Wrong user PINs in a row before the container locks.
        #[arg(long, default_value_t = 5)]
        max_pin_attempts: u32,
        /// Argon2id memory in KiB (default 19456; lower only for tests).
        #[arg(long, default_value_t = KdfParams::default().m_kib)]
        kdf_memory_kib: u32,
    },
    /// Show the daemon, the container's lock state, counter and key count.
    Status,
    /// Make a key inside the vault.
    Keygen {
        /// Label, unique in the container.
        #[arg(long)]
        label: String,
        /// rsa2048, rsa3072, rsa4096, p256 or p384.
        #[arg(long, default_value = "rsa2048")]
        alg: KeyAlgorithm,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List the keys (public facts only).
    List,
    /// Write a PKCS#10 request signed inside the vault.
    Csr {
        #[command(flatten)]
        subject: SubjectArgs,
        /// Output file (.pem for PEM, otherwise DER).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Make a self-signed certificate for a key and store it with the key.
    SelfSign {
        #[command(flatten)]
        subject: SubjectArgs,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Also write the certificate here (.pem for PEM, otherwise DER).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Store a certificate chain (leaf first; PEM or DER files) with a key.
    ImportCert {
        /// Key label.
        #[arg(long)]
        label: String,
        /// Certificate files, leaf first. A PEM file may hold the whole chain.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the certificate chain stored with a key.
    ExportCert {
        /// Key label.
        #[arg(long)]
        label: String,
        /// Output file (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Move an existing PKCS#8 private key (PEM or DER) into the vault. Delete the file afterwards.
    ImportKey {
        /// Label for the key.
        #[arg(long)]
        label: String,
        /// The PKCS#8 file.
        #[arg(long, value_name = "FILE")]
        pkcs8: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Sign a file with a key inside the vault.
    Sign {
        #[command(flatten)]
        signed: SignedFile,
        /// Signature output (ECDSA: DER).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verify a signature made by `sign` against the key's public half.
    Verify {
        #[command(flatten)]
        signed: SignedFile,
        /// Signature file.
        #[arg(long, value_name = "FILE")]
        sig: PathBuf,
    },
    /// Read or check the audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Change the user PIN (old PIN as usual; the new one from --new-pin-file or $CERTVAULT_NEW_PIN).
    ChangePin {
        /// File with the new PIN.
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<PathBuf>,
    },
    /// Write a certificate request file for the central (docs/provisioning.md), signed inside the vault by the
    /// device key. Device-made keys are made inside now if missing, and carry a CSR made inside.
    Request {
        /// An item, e.g. `label=opcua,alg=rsa-2048,uri=urn:machine-a,host=machine-a,origin=device`
        /// (origin: device, central or self-signed; alg defaults to rsa2048; host may repeat; days: validity of a
        /// self-signed certificate, default 365). Repeat --item for more.
        #[arg(long = "item", required = true, value_name = "ITEM")]
        items: Vec<provision::device::ItemSpec>,
        /// Output file (DER CMS).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Import an update file from the central (checked and stored inside vaultd in one write) and write a
    /// receipt file for the central.
    Apply {
        /// The update file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the receipt (DER CMS).
        #[arg(long, value_name = "FILE")]
        receipt: PathBuf,
    },
    /// The device identity used for provisioning.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Clear a PIN lockout with the admin PIN and set a new user PIN.
    Unlock {
        /// File with the admin PIN. Otherwise $CERTVAULT_ADMIN_PIN.
        #[arg(long, value_name = "FILE")]
        admin_pin_file: Option<PathBuf>,
        /// File with the new user PIN. Otherwise $CERTVAULT_NEW_PIN.
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// Make the device identity key and the transport key inside an existing container (idempotent).
    Init,
    /// Show the device keys, update counter, outstanding request and trusted central.
    Show,
    /// Pin the central's certificate (PEM or DER): only updates it signs are applied. Needs the admin PIN (on a
    /// PKCS#11 token: the user PIN).
    TrustCentral {
        /// The central's certificate.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// File with the admin PIN. Otherwise $CERTVAULT_ADMIN_PIN.
        #[arg(long, value_name = "FILE")]
        admin_pin_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Print records from the daemon.
    Show {
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        max: u32,
    },
    /// Check the hash chain of a container's log file offline.
    Verify {
        /// The container file (its log is `<file>.audit`).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// A file, a key and an algorithm: what `sign` and `verify` share.
#[derive(Args, Debug)]
struct SignedFile {
    /// Key label.
    #[arg(long)]
    label: String,
    /// Algorithm, e.g. rsa-pss-sha256, rsa-pkcs1-sha256, ecdsa-p256-sha256.
    #[arg(long, value_parser = parse_sign_alg)]
    alg: SignAlg,
    /// The signed file.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
}

#[derive(Args, Debug)]
struct PolicyArgs {
    /// Allow RSA PKCS#1 v1.5 decryption with this key (only for the deprecated Basic128Rsa15).
    #[arg(long)]
    allow_pkcs1v15_decrypt: bool,
    /// Only these uids may use the key through vaultd (repeat). Default: anyone who can open the socket.
    #[arg(long = "allow-uid", value_name = "UID")]
    allowed_uids: Vec<u32>,
}

impl PolicyArgs {
    fn policy(&self) -> KeyPolicy {
        KeyPolicy {
            allow_pkcs1v15_decrypt: self.allow_pkcs1v15_decrypt,
            allowed_uids: self.allowed_uids.clone(),
            unwrap_only: false,
        }
    }
}

#[derive(Args, Debug)]
struct SubjectArgs {
    /// Key label.
    #[arg(long)]
    label: String,
    /// Subject common name.
    #[arg(long)]
    cn: String,
    /// Subject organization.
    #[arg(long)]
    org: Option<String>,
    /// OPC UA ApplicationUri (subjectAltName URI).
    #[arg(long)]
    uri: Option<String>,
    /// DNS name (repeat).
    #[arg(long)]
    dns: Vec<String>,
    /// IP address (repeat).
    #[arg(long)]
    ip: Vec<IpAddr>,
}

impl SubjectArgs {
    fn request(&self) -> CsrRequest {
        CsrRequest {
            common_name: self.cn.clone(),
            organization: self.org.clone(),
            application_uri: self.uri.clone(),
            dns_names: self.dns.clone(),
            ip_addresses: self.ip.clone(),
        }
    }
}

fn parse_sign_alg(s: &str) -> Result<SignAlg, String> {
    SignAlg::ALL.into_iter().find(|a| a.to_string() == s).ok_or_else(|| {
        format!(
            "unknown algorithm {s:?}; one of {}",
            SignAlg::ALL.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

fn read_secret(file: Option<&Path>, env: &str, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        let mut b = Zeroizing::new(std::fs::read(f).with_context(|| format!("reading {what} from {}", f.display()))?);
        while matches!(b.last(), Some(b'\n' | b'\r')) {
            b.pop();
        }
        return Ok(b);
    }
    match std::env::var(env) {
        Ok(v) => Ok(Zeroizing::new(v.into_bytes())),
        Err(_) => bail!("no {what}: give a file with the option for it, or set ${env}"),
    }
}

fn connect(conn: &ConnArgs, login: bool) -> Result<DaemonClient> {
    let socket = conn.socket.clone().unwrap_or_else(default_socket);
    let client = DaemonClient::connect(&socket, conn.container.clone())?;
    if login {
        let pin = read_secret(conn.pin_file.as_deref(), "CERTVAULT_PIN", "user PIN")?;
        client.login(&pin)?;
    }
    Ok(client)
}

/// The key store the command works on: a PKCS#11 token when `--pkcs11` is given, else vaultd.
fn store(conn: &ConnArgs) -> Result<Box<dyn KeyStore>> {
    let Some(uri) = &conn.pkcs11 else {
        return Ok(Box::new(connect(conn, true)?));
    };
    Ok(Box::new(open_token(conn, uri)?))
}

/// The provisioning device: a PKCS#11 token when `--pkcs11` is given, else vaultd.
fn device_vault(conn: &ConnArgs) -> Result<Box<dyn DeviceVault>> {
    match &conn.pkcs11 {
        Some(uri) => Ok(Box::new(open_token(conn, uri)?)),
        None => Ok(Box::new(connect(conn, true)?)),
    }
}

fn open_token(conn: &ConnArgs, uri: &certvault::uri::Pkcs11Uri) -> Result<certvault::pkcs11::Pkcs11Token> {
    let mut uri = uri.clone();
    let pin = match uri.pin.take() {
        Some(source) => source.read()?,
        None => read_secret(conn.pin_file.as_deref(), "CERTVAULT_PIN", "token PIN")?,
    };
    let token = certvault::pkcs11::Pkcs11Token::open_uri(&uri)?;
    token.login(&pin)?;
    Ok(token)
}

fn daemon_only(conn: &ConnArgs, what: &str) -> Result<()> {
    if conn.pkcs11.is_some() {
        bail!("{what} is a vaultd command; for a PKCS#11 token use the token's own tools");
    }
    Ok(())
}

fn write_out(path: &Path, der: &[u8], label: &str) -> Result<()> {
    let data = if path.extension().is_some_and(|e| e == "pem") { pem(label, der).into_bytes() } else { der.to_vec() };
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Reads DER blocks from a PEM file (all blocks of the given label) or a DER file.
fn read_der_blocks(path: &Path, label: &str) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    let data = Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    if !data.starts_with(b"-----BEGIN") && !data.windows(10).any(|w| w == b"-----BEGIN") {
        return Ok(vec![Zeroizing::new(data.to_vec())]);
    }
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(&data) {
        let block = block.with_context(|| format!("{}: bad PEM", path.display()))?;
        if block.label == label {
            out.push(Zeroizing::new(block.contents.clone()));
        }
    }
    if out.is_empty() {
        bail!("{}: no PEM block labelled {label}", path.display());
    }
    Ok(out)
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("certvault: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match &cli.cmd {
        Cmd::Init { file, serial, admin_pin_file, max_pin_attempts, kdf_memory_kib } => {
            let pin = read_secret(cli.conn.pin_file.as_deref(), "CERTVAULT_PIN", "user PIN")?;
            let admin = read_secret(admin_pin_file.as_deref(), "CERTVAULT_ADMIN_PIN", "admin PIN")?;
            let kdf = KdfParams { m_kib: *kdf_memory_kib, ..KdfParams::default() };
            let mut c = Container::create(file, serial, &pin, &admin, kdf, *max_pin_attempts)?;
            ensure_device_keys(&mut c)?;
            c.save()?;
            writeln!(stdout, "created container {} (serial {serial})", file.display())?;
            writeln!(
                stdout,
                "device identity made inside: {} and {}",
                provision::DEVICE_KEY_LABEL,
                provision::TRANSPORT_KEY_LABEL
            )?;
            writeln!(stdout, "serve it with: vaultd --container {}", file.display())?;
        }
        Cmd::Status => {
            daemon_only(&cli.conn, "status")?;
            let client = connect(&cli.conn, false)?;
            let (daemon, containers) = client.hello()?;
            writeln!(stdout, "daemon: {daemon}")?;
            for c in containers {
                writeln!(stdout, "container: {} ({})", c.serial, c.backend)?;
            }
            let s = client.status()?;
            writeln!(stdout, "serial: {}", s.serial)?;
            writeln!(stdout, "locked: {}", s.locked)?;
            writeln!(stdout, "PIN attempts left: {}", s.attempts_left)?;
            if let Some(c) = s.update_counter {
                writeln!(stdout, "update counter: {c}")?;
            }
            if let Some(k) = s.keys {
                writeln!(stdout, "keys: {k}")?;
            }
            writeln!(stdout, "audit records: {}", s.audit_records)?;
        }
        Cmd::Keygen { label, alg, policy } => {
            let client = store(&cli.conn)?;
            let info = client.generate(label, *alg, policy.policy())?;
            writeln!(stdout, "generated {} key {:?} inside the vault", info.algorithm, info.label)?;
            writeln!(stdout, "id: {}", info.id_hex())?;
            writeln!(stdout, "public key sha256: {}", info.fingerprint())?;
        }
        Cmd::List => {
            let client = store(&cli.conn)?;
            for k in client.list()? {
                writeln!(
                    stdout,
                    "{}\t{}\tid={}\t{}\tsha256={}",
                    k.label,
                    k.algorithm,
                    k.id_hex(),
                    if k.made_inside { "made-inside" } else { "imported" },
                    k.fingerprint()
                )?;
            }
        }
        Cmd::Csr { subject, out } => {
            let client = store(&cli.conn)?;
            let csr = client.create_csr(&KeySelector::Label(subject.label.clone()), &subject.request())?;
            write_out(out, &csr, "CERTIFICATE REQUEST")?;
            writeln!(stdout, "wrote CSR for {:?} to {}", subject.label, out.display())?;
        }
        Cmd::SelfSign { subject, days, out } => {
            let client = store(&cli.conn)?;
            let sel = KeySelector::Label(subject.label.clone());
            let key = client.key(&sel)?;
            let cert = certvault::csr::self_signed(
                key.as_ref(),
                &subject.request(),
                Duration::from_secs(days.saturating_mul(86_400)),
            )?;
            client.store_cert_chain(&sel, vec![cert.clone()])?;
            if let Some(out) = out {
                write_out(out, &cert, "CERTIFICATE")?;
            }
            writeln!(
                stdout,
                "self-signed certificate stored with {:?} (sha1 thumbprint {})",
                subject.label,
                hex::encode(certvault::HashAlg::Sha1.digest(&cert))
            )?;
        }
        Cmd::ImportCert { label, files } => {
            let client = store(&cli.conn)?;
            let mut chain = Vec::new();
            for f in files {
                chain.extend(read_der_blocks(f, "CERTIFICATE")?.into_iter().map(|b| b.to_vec()));
            }
            let n = chain.len();
            client.store_cert_chain(&KeySelector::Label(label.clone()), chain)?;
            writeln!(stdout, "stored a chain of {n} certificate(s) with {label:?}")?;
        }
        Cmd::ExportCert { label, out } => {
            let client = store(&cli.conn)?;
            let chain = client.cert_chain(&KeySelector::Label(label.clone()))?;
            if chain.is_empty() {
                bail!("no certificate is stored with {label:?}; use self-sign or import-cert");
            }
            let text: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
            std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
            writeln!(stdout, "wrote {} certificate(s) to {}", chain.len(), out.display())?;
        }
        Cmd::ImportKey { label, pkcs8, policy } => {
            let client = store(&cli.conn)?;
            let mut blocks = read_der_blocks(pkcs8, "PRIVATE KEY")?;
            let der = blocks.pop().context("no key in the file")?;
            let info = client.import_pkcs8(label, der, policy.policy())?;
            writeln!(stdout, "imported {} key {:?} (id {})", info.algorithm, info.label, info.id_hex())?;
            writeln!(stdout, "the key now lives in the vault: destroy {}", pkcs8.display())?;
        }
        Cmd::Sign { signed: SignedFile { label, alg, input }, out } => {
            let client = store(&cli.conn)?;
            let key = client.key(&KeySelector::Label(label.clone()))?;
            let data = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
            let sig = key.sign_der(*alg, &data)?;
            std::fs::write(out, &sig).with_context(|| format!("writing {}", out.display()))?;
            writeln!(stdout, "signed {} with {label:?} ({alg}): {} bytes", input.display(), sig.len())?;
        }
        Cmd::Verify { signed: SignedFile { label, alg, input }, sig } => {
            let client = store(&cli.conn)?;
            let key = client.key(&KeySelector::Label(label.clone()))?;
            let data = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
            let mut s = std::fs::read(sig).with_context(|| format!("reading {}", sig.display()))?;
            if alg.is_ecdsa() {
                let field = key.info().algorithm.signature_len() / 2;
                s = certvault::sig::ecdsa_der_to_raw(&s, field)?;
            }
            PublicKey::from_spki(&key.info().spki_der)?.verify(*alg, &data, &s)?;
            writeln!(stdout, "signature OK")?;
        }
        Cmd::Audit { cmd } => match cmd {
            AuditCmd::Show { .. } if cli.conn.pkcs11.is_some() => daemon_only(&cli.conn, "audit")?,
            AuditCmd::Show { from, max } => {
                let client = connect(&cli.conn, true)?;
                for r in client.audit(*from, *max)? {
                    writeln!(
                        stdout,
                        "{}\t{}\tuid={}\t{}\t{}\t{}\t{}",
                        r.seq,
                        r.time_ms,
                        r.uid.map_or("-".into(), |u| u.to_string()),
                        r.op,
                        r.key.as_deref().unwrap_or("-"),
                        r.detail.as_deref().unwrap_or("-"),
                        if r.ok { "ok" } else { "FAILED" }
                    )?;
                }
            }
            AuditCmd::Verify { file } => {
                let (header, _) = container::read_header(file)?;
                let log = container::sidecar(file, "audit");
                let v = certvault::audit::verify(&log, &header.serial)?;
                writeln!(stdout, "audit log {} verifies: {} records, chain intact", log.display(), v.records)?;
            }
        },
        Cmd::ChangePin { new_pin_file } => {
            daemon_only(&cli.conn, "change-pin")?;
            let client = connect(&cli.conn, false)?;
            let old = read_secret(cli.conn.pin_file.as_deref(), "CERTVAULT_PIN", "current PIN")?;
            let new = read_secret(new_pin_file.as_deref(), "CERTVAULT_NEW_PIN", "new PIN")?;
            client.change_pin(&old, &new)?;
            writeln!(stdout, "PIN changed")?;
        }
        Cmd::Request { items, out } => {
            let vault = device_vault(&cli.conn)?;
            let der = provision::device::make_request(vault.as_ref(), items)?;
            std::fs::write(out, &der).with_context(|| format!("writing {}", out.display()))?;
            writeln!(stdout, "wrote request for {} item(s) to {}", items.len(), out.display())?;
            writeln!(stdout, "send it to the central; apply its answer with `certvault apply`")?;
        }
        Cmd::Apply { input, receipt } => {
            let vault = device_vault(&cli.conn)?;
            let der = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
            let (report, receipt_der) = provision::device::apply_update(vault.as_ref(), &der)
                .with_context(|| format!("{} was not applied; nothing changed", input.display()))?;
            std::fs::write(receipt, &receipt_der).with_context(|| format!("writing {}", receipt.display()))?;
            for t in &report.certificates {
                let how = if report.imported_keys.contains(&t.label) { " (key made by the central)" } else { "" };
                writeln!(stdout, "stored {}{how}: sha256 {}", t.label, t.sha256)?;
            }
            writeln!(stdout, "update counter is now {}", report.counter)?;
            writeln!(stdout, "wrote receipt to {}: send it to the central", receipt.display())?;
        }
        Cmd::Device { cmd } => {
            let vault = device_vault(&cli.conn)?;
            let state = match cmd {
                DeviceCmd::Init => vault.device_init()?,
                DeviceCmd::Show => vault.device_info()?,
                DeviceCmd::TrustCentral { cert, admin_pin_file } => {
                    let mut blocks = read_der_blocks(cert, "CERTIFICATE")?;
                    let der = blocks.drain(..).next().context("no certificate in the file")?;
                    match &cli.conn.pkcs11 {
                        // A token's SO PIN cannot be checked while the user is logged in: the user PIN decides.
                        Some(uri) => open_token(&cli.conn, uri)?.trust_central(&der)?,
                        None => {
                            let admin = read_secret(admin_pin_file.as_deref(), "CERTVAULT_ADMIN_PIN", "admin PIN")?;
                            connect(&cli.conn, true)?.trust_central(&admin, &der)?;
                        }
                    }
                    writeln!(stdout, "trusting the central certificate sha256 {}", provision::thumbprint(&der))?;
                    vault.device_info()?
                }
            };
            writeln!(stdout, "serial: {}", state.serial)?;
            for (what, key) in [("device key", &state.device_key), ("transport key", &state.transport_key)] {
                match key {
                    Some(k) => writeln!(stdout, "{what}: {} {} sha256={}", k.label, k.algorithm, k.fingerprint())?,
                    None => writeln!(stdout, "{what}: none (run `certvault device init`)")?,
                }
            }
            writeln!(stdout, "update counter: {}", state.counter)?;
            writeln!(stdout, "request outstanding: {}", if state.pending_request { "yes" } else { "no" })?;
            match &state.central_cert {
                Some(c) => writeln!(stdout, "trusted central: sha256 {}", provision::thumbprint(c))?,
                None => writeln!(stdout, "trusted central: none (pin one with `certvault device trust-central`)")?,
            }
        }
        Cmd::Unlock { admin_pin_file, new_pin_file } => {
            let client = connect(&cli.conn, false)?;
            let admin = read_secret(admin_pin_file.as_deref(), "CERTVAULT_ADMIN_PIN", "admin PIN")?;
            let new = read_secret(new_pin_file.as_deref(), "CERTVAULT_NEW_PIN", "new user PIN")?;
            client.unlock(&admin, &new)?;
            writeln!(stdout, "unlocked; the new user PIN is set")?;
        }
    }
    Ok(())
}
