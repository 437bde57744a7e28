//! The two-machine demo, one command (`scripts/demo`, or `cargo run --release -p demo-machines --bin demo`).
//!
//! In a fresh temporary directory: three vaults (machine-a's vaultd container, machine-b's SoftHSM2 token fronted
//! by its own vaultd, and the demo CA's container), every key generated inside them; certificates from the CA;
//! both PKI folders with mutual trust; the configuration files. Then machine-a runs as a child process, machine-b
//! runs against it for a while, an untrusted third client tries to connect and must be rejected, machine-a is
//! stopped with SIGTERM, and the summary tells what was negotiated, where every key lives and how often each vault
//! used it. The exit code is 0 only if every check held; every child process is killed on every way out.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use certvault::container::{Container, KdfParams};
use certvault::csr::{self, CsrRequest};
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SharedKey};
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, EndpointFilter, Session, SessionOptions, UserIdentity};
use certvault_opcua::pki::PkiStore;
use clap::Parser;
use demo_machines::certs::{empty_crl, thumbprint};
use demo_machines::client_config::parse_duration;
use demo_machines::records::{hex, Report, ServerEvent};

const SOFTHSM: &str = certvault::pkcs11::softhsm::MODULE;
const CA_SERIAL: &str = "CV-DEMO-CA";
const A_SERIAL: &str = "CV-MACHINE-A";
const INTRUDER_SERIAL: &str = "CV-INTRUDER";
const B_TOKEN: &str = "machine-b";
const A_URI: &str = "urn:certvault:demo:machine-a";
const B_URI: &str = "urn:certvault:demo:machine-b";
const OPERATOR_CN: &str = "Machine B operator";
const VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// Runs the two-machine demo in a temporary directory.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// How long machine-b watches the line.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Keep the temporary directory (vaults, PKI folders, configuration files) and print where it is.
    #[arg(long)]
    keep: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MACHINE_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            println!("\ndemo FAILED: see the checks above.");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            println!("\ndemo FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A child process that is killed (and reaped) when this guard drops, however the demo ends.
struct ChildGuard {
    name: &'static str,
    child: Option<Child>,
}

impl ChildGuard {
    fn new(name: &'static str, child: Child) -> Self {
        ChildGuard { name, child: Some(child) }
    }

    fn child(&mut self) -> Result<&mut Child> {
        self.child.as_mut().with_context(|| format!("{} already ended", self.name))
    }

    /// Waits up to `timeout`; on timeout kills the process and says so.
    fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let name = self.name;
        let child = self.child()?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                bail!("{name} did not end within {timeout:?}; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to `timeout`.
    fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let pid = rustix::process::Pid::from_child(self.child()?);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .with_context(|| format!("sending SIGTERM to {}", self.name))?;
        self.wait_timeout(timeout)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// A binary next to this one (target/<profile>/), as Cargo builds the package's binaries together.
fn sibling(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the demo's own executable")?;
    let path = exe.parent().map(|d| d.join(name)).context("the demo executable has no folder")?;
    ensure!(
        path.exists(),
        "{} is missing: build the demo's binaries with `cargo build --release -p demo-machines --bins` (or set {env})",
        path.display()
    );
    Ok(path)
}

/// Writes a secret file readable only by this user.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn mkdir(path: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A random PIN for a throw-away vault.
fn random_pin() -> Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(hex(&bytes))
}

fn start_vaultd(exe: &Path, args: &[&std::ffi::OsStr], socket: &Path, name: &'static str) -> Result<ChildGuard> {
    let child = certvault::daemon::launch::start_vaultd(exe, args, socket, Duration::from_secs(20))
        .with_context(|| format!("starting {name}"))?;
    Ok(ChildGuard::new(name, child))
}

fn generate(vault: &DaemonClient, label: &str) -> Result<SharedKey> {
    vault
        .generate(label, KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default())
        .with_context(|| format!("generating {label}"))?;
    Ok(vault.key(&KeySelector::Label(label.into()))?)
}

fn vaultd_uri(serial: &str, label: &str, socket: &Path, pin: &Path) -> String {
    format!("vaultd:serial={serial};object={label}?socket={}&pin-source=file:{}", socket.display(), pin.display())
}

fn application(cn: &str, uri: &str) -> CsrRequest {
    CsrRequest {
        common_name: cn.into(),
        organization: Some("certvault demo".into()),
        application_uri: Some(uri.into()),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    }
}

/// Forwards a child's output lines to our stdout, indented and labelled.
fn forward(name: &'static str, stream: impl Read + Send + 'static, strip: &'static str) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            println!("    {name} | {}", line.strip_prefix(strip).unwrap_or(&line));
        }
    });
}

/// Counts the successful key operations per (key, op) in a vault's audit log.
fn key_operations(vault: &DaemonClient) -> Result<BTreeMap<(String, String), usize>> {
    let mut counts = BTreeMap::new();
    for r in vault.audit(1, u32::MAX)? {
        if r.ok && (r.op == "sign" || r.op == "decrypt") {
            *counts.entry((r.key.unwrap_or_default(), r.op)).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn ops(counts: &BTreeMap<(String, String), usize>, key: &str, op: &str) -> usize {
    counts.get(&(key.to_owned(), op.to_owned())).copied().unwrap_or(0)
}

struct Checks {
    all: Vec<(bool, String)>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        self.all.push((ok, what.into()));
    }
}

fn run(args: &Args) -> Result<bool> {
    if !certvault::pkcs11::softhsm::available() {
        bail!(
            "SoftHSM2 is not installed, and machine-b's vault is a SoftHSM2 token ({SOFTHSM} and softhsm2-util are \
             missing). Install it with `sudo apt-get install softhsm2` (scripts/test installs it too), then run the \
             demo again."
        );
    }
    let vaultd = sibling("demo-vaultd", "VAULTD_BIN")?;
    let machine_a = sibling("machine-a", "MACHINE_A_BIN")?;
    let machine_b = sibling("machine-b", "MACHINE_B_BIN")?;
    let tmp = tempfile::Builder::new().prefix("certvault-demo-").tempdir().context("creating a temporary directory")?;
    let root = tmp.path().to_path_buf();
    let dir_ca = mkdir(&root.join("ca"))?;
    let dir_a = mkdir(&root.join("machine-a"))?;
    let dir_b = mkdir(&root.join("machine-b"))?;

    // ---------------------------------------------------------------------------------------------------------
    step(1, "vaults: three of them, every key generated inside (this process never sees a private key)");
    // SoftHSM2 reads SOFTHSM2_CONF when a process first loads it: set it before any child starts (and before this
    // process has threads), so B's vaultd and softhsm2-util find B's token directory.
    let softhsm_conf = certvault::pkcs11::softhsm::write_config(&mkdir(&dir_b.join("softhsm"))?)?;
    std::env::set_var("SOFTHSM2_CONF", &softhsm_conf);
    if std::env::var_os("CERTVAULT_LOG").is_none() {
        // SoftHSM2 lacks mechanisms cryptoki asks about; those complaints are noise here.
        std::env::set_var("CERTVAULT_LOG", "error,cryptoki=off");
    }
    let (pin_ca, pin_a, pin_b) = (random_pin()?, random_pin()?, random_pin()?);
    let admin_pin = random_pin()?;
    let pin_file_ca = dir_ca.join("pin");
    let pin_file_a = mkdir(&dir_a.join("vault"))?.join("pin");
    let pin_file_b = mkdir(&dir_b.join("vault"))?.join("pin");
    write_private(&pin_file_ca, pin_ca.as_bytes())?;
    write_private(&pin_file_a, pin_a.as_bytes())?;
    write_private(&pin_file_b, pin_b.as_bytes())?;

    // The CA's container, and a container for the untrusted intruder's key, served by one vaultd.
    let ca_container = dir_ca.join("demo-ca.cvault");
    let intruder_container = dir_ca.join("intruder.cvault");
    Container::create(&ca_container, CA_SERIAL, pin_ca.as_bytes(), admin_pin.as_bytes(), KdfParams::default(), 5)?;
    Container::create(
        &intruder_container,
        INTRUDER_SERIAL,
        pin_ca.as_bytes(),
        admin_pin.as_bytes(),
        KdfParams::default(),
        5,
    )?;
    let sock_ca = dir_ca.join("vaultd.sock");
    let _vaultd_ca = start_vaultd(
        &vaultd,
        &["--container".as_ref(), ca_container.as_os_str(), "--container".as_ref(), intruder_container.as_os_str()],
        &sock_ca,
        "the CA's vaultd",
    )?;
    // machine-a's container and its vaultd.
    let a_container = dir_a.join("vault/machine-a.cvault");
    Container::create(&a_container, A_SERIAL, pin_a.as_bytes(), admin_pin.as_bytes(), KdfParams::default(), 5)?;
    let sock_a = dir_a.join("vault/vaultd.sock");
    let _vaultd_a =
        start_vaultd(&vaultd, &["--container".as_ref(), a_container.as_os_str()], &sock_a, "machine-a's vaultd")?;
    // machine-b's SoftHSM2 token, fronted by its own vaultd so that the token session and B's audit log live there.
    let so_pin = random_pin()?;
    certvault::pkcs11::softhsm::init_token(&softhsm_conf, B_TOKEN, &pin_b, &so_pin)?;
    let token_uri = format!("pkcs11:token={B_TOKEN}?module-path={SOFTHSM}");
    let state_b = mkdir(&dir_b.join("vault/state"))?;
    let sock_b = dir_b.join("vault/vaultd.sock");
    let _vaultd_b = start_vaultd(
        &vaultd,
        &["--pkcs11".as_ref(), token_uri.as_ref(), "--state-dir".as_ref(), state_b.as_os_str()],
        &sock_b,
        "machine-b's vaultd",
    )?;
    let b_serial = format!("pkcs11-{B_TOKEN}");

    let ca_vault = DaemonClient::connect(&sock_ca, Some(CA_SERIAL.into()))?;
    ca_vault.login(pin_ca.as_bytes())?;
    let intruder_vault = DaemonClient::connect(&sock_ca, Some(INTRUDER_SERIAL.into()))?;
    intruder_vault.login(pin_ca.as_bytes())?;
    let a_vault = DaemonClient::connect(&sock_a, Some(A_SERIAL.into()))?;
    a_vault.login(pin_a.as_bytes())?;
    let b_vault = DaemonClient::connect(&sock_b, Some(b_serial.clone()))?;
    b_vault.login(pin_b.as_bytes())?;

    let ca_key = generate(&ca_vault, "demo-ca")?;
    let a_key = generate(&a_vault, "machine-a")?;
    let b_key = generate(&b_vault, "machine-b")?;
    let op_key = generate(&b_vault, "operator")?;
    let intruder_key = generate(&intruder_vault, "intruder")?;
    let uri_ca = vaultd_uri(CA_SERIAL, "demo-ca", &sock_ca, &pin_file_ca);
    let uri_a = vaultd_uri(A_SERIAL, "machine-a", &sock_a, &pin_file_a);
    let uri_b = vaultd_uri(&b_serial, "machine-b", &sock_b, &pin_file_b);
    let uri_op = vaultd_uri(&b_serial, "operator", &sock_b, &pin_file_b);
    let token_key = |label: &str| format!("pkcs11:token={B_TOKEN};object={label}?module-path={SOFTHSM}");
    println!("    demo CA     RSA-2048  in vaultd container {CA_SERIAL}");
    println!("    machine-a   RSA-2048  in vaultd container {A_SERIAL}");
    println!("    machine-b   RSA-2048  on SoftHSM2 token {B_TOKEN} (fronted by its own vaultd)");
    println!("    operator    RSA-2048  on SoftHSM2 token {B_TOKEN} (machine-b's user certificate key)");
    println!("    intruder    RSA-2048  in vaultd container {INTRUDER_SERIAL} (the untrusted third client)");

    // ---------------------------------------------------------------------------------------------------------
    step(2, "certificates: the demo CA, its key in its vault, issues both application certificates and the operator's");
    let ca_cert = csr::self_signed_ca(ca_key.as_ref(), "certvault demo CA", VALIDITY)?;
    let issue = |key: &SharedKey, request: &CsrRequest| {
        csr::issue(ca_key.as_ref(), &ca_cert, &key.info().spki_der, request, VALIDITY).context("issuing")
    };
    let a_cert = issue(&a_key, &application("Machine A", A_URI))?;
    let b_cert = issue(&b_key, &application("Machine B", B_URI))?;
    let op_request = CsrRequest {
        common_name: OPERATOR_CN.into(),
        organization: Some("certvault demo".into()),
        ..CsrRequest::default()
    };
    let op_cert = issue(&op_key, &op_request)?;
    let crl = empty_crl(ca_key.as_ref(), &ca_cert, 1, VALIDITY)?;
    let intruder_cert = csr::self_signed(
        intruder_key.as_ref(),
        &application("Intruder", "urn:certvault:demo:intruder"),
        Duration::from_secs(86_400),
    )?;
    // Each chain is also stored with its key in the vault (`certvault export-cert` reads it back).
    a_vault.store_cert_chain(&KeySelector::Label("machine-a".into()), vec![a_cert.clone(), ca_cert.clone()])?;
    b_vault.store_cert_chain(&KeySelector::Label("machine-b".into()), vec![b_cert.clone(), ca_cert.clone()])?;
    b_vault.store_cert_chain(&KeySelector::Label("operator".into()), vec![op_cert.clone(), ca_cert.clone()])?;
    let (thumb_ca, thumb_a, thumb_b) = (thumbprint(&ca_cert)?, thumbprint(&a_cert)?, thumbprint(&b_cert)?);
    let (thumb_op, thumb_intruder) = (thumbprint(&op_cert)?, thumbprint(&intruder_cert)?);
    println!("    demo CA     {thumb_ca}  (and an empty CRL)");
    println!("    machine-a   {thumb_a}  {A_URI}, localhost, 127.0.0.1");
    println!("    machine-b   {thumb_b}  {B_URI}, localhost, 127.0.0.1");
    println!("    operator    {thumb_op}  CN={OPERATOR_CN}");
    println!("    intruder    {thumb_intruder}  self-signed, trusted by nobody");

    // ---------------------------------------------------------------------------------------------------------
    step(3, "PKI folders with mutual trust (both trust the CA, with its CRL) and the configuration files");
    let pki_a = PkiStore::create_or_open(dir_a.join("pki"))?;
    pki_a.trust(&ca_cert)?;
    pki_a.add_crl(&crl, true)?;
    write(&pki_a.own_certs_dir().join("machine-a.der"), &a_cert)?;
    let users_pki_a = PkiStore::create_or_open(dir_a.join("pki-users"))?;
    users_pki_a.trust(&ca_cert)?;
    users_pki_a.add_crl(&crl, true)?;
    let pki_b = PkiStore::create_or_open(dir_b.join("pki"))?;
    pki_b.trust(&ca_cert)?;
    pki_b.add_crl(&crl, true)?;
    write(&pki_b.own_certs_dir().join("machine-b.der"), &b_cert)?;
    write(&dir_b.join("user/operator.der"), &op_cert)?;
    write(
        &dir_a.join("users.toml"),
        format!(
            "# Users of machine-a. The user trust list (pki-users) trusts the demo CA; of its certificates, this one\n\
             # (machine-b's operator) is mapped to the operator role. Other trusted certificates get the default\n\
             # role, observer: read and browse only.\n\
             [[certificate]]\nthumbprint = \"{thumb_op}\"   # CN={OPERATOR_CN}\nrole = \"operator\"\n"
        ),
    )?;
    let config_a = dir_a.join("machine-a.toml");
    write(
        &config_a,
        format!(
            r#"# machine-a: the filling line's OPC UA server (written by the demo; see demo-machines/config/machine-a.toml)
[server]
endpoint_url = "opc.tcp://127.0.0.1:0/"   # port 0: any free port; machine-a prints the real URL
application_uri = "{A_URI}"
application_name = "Machine A (filling line)"

[identity]
key = "{uri_a}"
certificate = "pki/own/certs/machine-a.der"

[security]
policies = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
modes = ["Sign", "SignAndEncrypt"]
allow_none = false
pki = "pki"

[users]
anonymous = false
file = "users.toml"
certificates = "pki-users"
"#
        ),
    )?;
    println!("    {}", dir_a.join("pki").display());
    println!("    {}", dir_b.join("pki").display());
    println!("    {}", config_a.display());

    // ---------------------------------------------------------------------------------------------------------
    step(4, "machine-a starts (a child process; its key stays in its vaultd)");
    let mut a_child = Command::new(&machine_a)
        .arg("--config")
        .arg(&config_a)
        .env("MACHINE_LOG", std::env::var("MACHINE_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", machine_a.display()))?;
    let (a_out, a_err) = (a_child.stdout.take(), a_child.stderr.take());
    let mut a_guard = ChildGuard::new("machine-a", a_child);
    if let Some(err) = a_err {
        forward("machine-a", err, "machine-a: ");
    }
    let (events_tx, events) = mpsc::channel::<ServerEvent>();
    if let Some(out) = a_out {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<ServerEvent>(&line) {
                    Ok(event) => {
                        if events_tx.send(event).is_err() {
                            return;
                        }
                    }
                    Err(_) => println!("    machine-a | {line}"),
                }
            }
        });
    }
    let ready = loop {
        match events.recv_timeout(Duration::from_secs(60)) {
            Ok(ServerEvent::Ready { endpoint_url, certificate_thumbprint, key, endpoints }) => {
                break (endpoint_url, certificate_thumbprint, key, endpoints)
            }
            Ok(_) => continue,
            Err(_) => {
                let status = a_guard.child()?.try_wait()?;
                bail!("machine-a did not report ready (exit status: {status:?}); its log is above");
            }
        }
    };
    let (url, a_thumb_reported, a_key_reported, endpoints) = ready;
    println!("    listening on {url}");
    println!("    endpoints    {}", endpoints.join(", "));
    println!("    certificate  {a_thumb_reported}");
    println!("    key          {a_key_reported}");

    // ---------------------------------------------------------------------------------------------------------
    step(
        5,
        &format!("machine-b runs for {:?}: strongest common policy, SignAndEncrypt, X.509 operator", args.duration),
    );
    let config_b = dir_b.join("machine-b.toml");
    write(
        &config_b,
        format!(
            r#"# machine-b: the operator client (written by the demo; see demo-machines/config/machine-b.toml)
[client]
server_url = "{url}"
application_uri = "{B_URI}"
application_name = "Machine B"

[identity]
key = "{uri_b}"
certificate = "pki/own/certs/machine-b.der"

[security]
policies = ["Aes256_Sha256_RsaPss", "Basic256Sha256", "Aes128_Sha256_RsaOaep"]
pki = "pki"

[user]
certificate = "user/operator.der"
key = "{uri_op}"

[run]
setpoint = 180.0
publishing_interval_ms = 250
"#
        ),
    )?;
    let mut b_child = Command::new(&machine_b)
        .arg("--config")
        .arg(&config_b)
        .arg("--duration")
        .arg(format!("{}ms", args.duration.as_millis()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", machine_b.display()))?;
    let (b_out, b_err) = (b_child.stdout.take(), b_child.stderr.take());
    let mut b_guard = ChildGuard::new("machine-b", b_child);
    if let Some(err) = b_err {
        forward("machine-b", err, "machine-b: ");
    }
    let (report_tx, report_rx) = mpsc::channel::<String>();
    if let Some(mut out) = b_out {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            let _ = report_tx.send(text);
        });
    }
    let b_status = b_guard.wait_timeout(args.duration + Duration::from_secs(90))?;
    let b_stdout = report_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let report: Option<Report> =
        b_stdout.lines().rev().find(|l| l.starts_with('{')).and_then(|l| serde_json::from_str(l).ok());
    println!("    machine-b exited with {b_status}");

    // ---------------------------------------------------------------------------------------------------------
    // machine-a's key operations so far all served machine-b's session; what follows is the intruder's.
    let a_ops_for_b = key_operations(&a_vault)?;
    step(6, "an untrusted third client (self-signed certificate, key in a vault) tries machine-a");
    let intruder_identity = LocalIdentity::new(intruder_key.clone(), intruder_cert.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let intruder = runtime.block_on(async {
        let mut channel = ClientOptions::new(SecurityPolicy::None, SecurityMode::None);
        channel.identity = Some(intruder_identity);
        // No trust store: the intruder trusts machine-a's certificate as given, so any refusal is machine-a's.
        let mut options = SessionOptions::new(channel);
        options.discovery = Some(EndpointFilter::secure());
        options.application_uri = Some("urn:certvault:demo:intruder".into());
        options.identity = UserIdentity::Anonymous;
        tokio::time::timeout(Duration::from_secs(60), Session::connect(&url, options)).await
    });
    let intruder_outcome = match intruder {
        Err(_) => Err("the attempt timed out".to_owned()),
        Ok(Ok(session)) => {
            let _ = runtime.block_on(session.close());
            Ok(())
        }
        Ok(Err(e)) => Err(format!("{} ({e})", e.status_code())),
    };
    drop(runtime);
    match &intruder_outcome {
        Ok(()) => println!("    the intruder got a session: machine-a did NOT reject it"),
        Err(why) => println!("    the intruder was refused: {why}"),
    }
    // machine-a reports the refusal on stdout and files the certificate in rejected/certs.
    let mut refusal = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while refusal.is_none() && Instant::now() < deadline {
        if let Ok(ServerEvent::Refused { status, copied_to_rejected, .. }) =
            events.recv_timeout(Duration::from_millis(200))
        {
            refusal = Some((status, copied_to_rejected));
        }
    }
    let rejected: Vec<String> = pki_a.rejected_certificates().iter().map(|c| hex(&c.thumbprint())).collect();
    let intruder_filed = rejected.contains(&thumb_intruder);
    let b_filed = rejected.contains(&thumb_b);
    if let Some((status, _)) = &refusal {
        println!("    machine-a refused it: {status}");
    }
    println!(
        "    {}/rejected/certs holds {} certificate(s){}",
        pki_a.root().display(),
        rejected.len(),
        if intruder_filed { ", the intruder's among them" } else { "" }
    );

    // ---------------------------------------------------------------------------------------------------------
    step(7, "machine-a stops on SIGTERM");
    let a_status = a_guard.terminate(Duration::from_secs(20));
    let stopped = loop {
        match events.recv_timeout(Duration::from_secs(2)) {
            Ok(ServerEvent::Stopped { .. }) => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    let a_clean = matches!(&a_status, Ok(s) if s.success()) && stopped;
    match &a_status {
        Ok(s) => println!("    machine-a exited with {s}"),
        Err(e) => println!("    machine-a: {e:#}"),
    }

    // ---------------------------------------------------------------------------------------------------------
    step(8, "audit logs: how often each vault used its keys");
    let a_ops = key_operations(&a_vault)?;
    let b_ops = key_operations(&b_vault)?;
    let ca_ops = key_operations(&ca_vault)?;
    let a_chain = certvault::audit::verify(&certvault::container::sidecar(&a_container, "audit"), A_SERIAL);
    let b_chain =
        certvault::audit::verify(&certvault::container::sidecar(&state_b.join(&b_serial), "audit"), &b_serial);
    let (a_sign, a_decrypt) = (ops(&a_ops, "machine-a", "sign"), ops(&a_ops, "machine-a", "decrypt"));
    let (a_sign_b, a_decrypt_b) = (ops(&a_ops_for_b, "machine-a", "sign"), ops(&a_ops_for_b, "machine-a", "decrypt"));
    let a_intruder = (a_sign + a_decrypt).saturating_sub(a_sign_b + a_decrypt_b);
    let (b_sign, b_decrypt) = (ops(&b_ops, "machine-b", "sign"), ops(&b_ops, "machine-b", "decrypt"));
    let op_sign = ops(&b_ops, "operator", "sign");
    let ca_sign = ops(&ca_ops, "demo-ca", "sign");
    let chain_text = |r: &certvault::Result<certvault::audit::Verified>| match r {
        Ok(v) => format!("hash chain intact, {} records", v.records),
        Err(e) => format!("hash chain BROKEN: {e}"),
    };
    println!("    machine-a's container: machine-a signed {a_sign}x, decrypted {a_decrypt}x; {}", chain_text(&a_chain));
    println!(
        "    machine-b's token:     machine-b signed {b_sign}x, decrypted {b_decrypt}x; operator signed {op_sign}x; {}",
        chain_text(&b_chain)
    );
    println!("    the CA's container:    demo-ca signed {ca_sign}x (4 certificates and a CRL)");

    // ---------------------------------------------------------------------------------------------------------
    let mut checks = Checks { all: Vec::new() };
    let report = report.unwrap_or_default();
    checks.check(b_status.success() && report.ok, "machine-b: every step Good, exit code 0");
    for s in &report.steps {
        checks.check(s.ok(), format!("machine-b {}: {}", s.step, s.status));
    }
    let strongest = SecurityPolicy::Aes256Sha256RsaPss.name();
    checks.check(
        report.policy.as_deref() == Some(strongest),
        format!("negotiated the strongest common policy ({strongest})"),
    );
    checks.check(report.mode.as_deref() == Some("SignAndEncrypt"), "negotiated mode SignAndEncrypt");
    checks.check(
        report.server_certificate_thumbprint.as_deref() == Some(&thumb_a) && a_thumb_reported == thumb_a,
        "machine-b saw machine-a's CA-issued certificate",
    );
    checks.check(report.own_certificate_thumbprint.as_deref() == Some(&thumb_b), "machine-b presented its certificate");
    let states = report.values.get("State").map(|v| v.seen.clone()).unwrap_or_default();
    checks.check(states.iter().any(|s| s == "Running"), "machine-b watched the line run after Start");
    let good = report.values.get("GoodParts").and_then(|v| v.last.as_u64()).unwrap_or(0);
    checks.check(good > 0, format!("machine-b saw bottles filled ({good} good)"));
    checks.check(a_sign_b > 0 && a_decrypt_b > 0, "machine-a's vault audit log recorded its key operations");
    checks.check(b_sign > 0 && b_decrypt > 0 && op_sign > 0, "machine-b's vault audit log recorded its key operations");
    checks.check(a_chain.is_ok() && b_chain.is_ok(), "both audit logs' hash chains verify");
    checks.check(intruder_outcome.is_err(), "the untrusted client got no session");
    checks.check(
        refusal.as_ref().is_some_and(|(status, copied)| status.contains("BadCertificateUntrusted") && *copied),
        "machine-a refused its certificate as untrusted",
    );
    checks.check(intruder_filed, "the untrusted certificate is in machine-a's rejected/certs");
    checks.check(!b_filed, "machine-b's certificate was never rejected");
    checks.check(a_clean, "machine-a stopped cleanly on SIGTERM");

    // ---------------------------------------------------------------------------------------------------------
    let mut s = String::new();
    let _ = writeln!(s, "\n== summary ==");
    let _ = writeln!(s, "security policy    {}", report.policy.as_deref().unwrap_or("-"));
    let _ = writeln!(s, "security mode      {}", report.mode.as_deref().unwrap_or("-"));
    let _ = writeln!(s, "user               {}", report.user);
    let _ = writeln!(s, "machine-a cert     {thumb_a}  (SHA-1; issued by the demo CA {thumb_ca})");
    let _ = writeln!(s, "machine-b cert     {thumb_b}");
    let _ = writeln!(s, "operator cert      {thumb_op}");
    let _ = writeln!(s, "machine-a key      {uri_a}");
    let _ = writeln!(s, "machine-b key      {uri_b}");
    let _ = writeln!(s, "                     = {} on a SoftHSM2 token", token_key("machine-b"));
    let _ = writeln!(s, "operator key       {uri_op}");
    let _ = writeln!(s, "                     = {} on a SoftHSM2 token", token_key("operator"));
    let _ = writeln!(s, "CA key             {uri_ca}");
    let _ = writeln!(
        s,
        "A's vault audit    {} key operations by machine-a ({a_sign} sign, {a_decrypt} decrypt): {} for machine-b's \
         session, {a_intruder} for the refused intruder's OpenSecureChannel",
        a_sign + a_decrypt,
        a_sign_b + a_decrypt_b
    );
    let _ = writeln!(
        s,
        "B's vault audit    {} key operations by machine-b and operator ({b_sign} sign, {b_decrypt} decrypt, \
         {op_sign} user-token sign)",
        b_sign + b_decrypt + op_sign
    );
    let _ = writeln!(s, "CA vault audit     {ca_sign} signatures by demo-ca");
    let _ = match (&intruder_outcome, &refusal) {
        (Err(why), Some((status, _))) if intruder_filed => {
            writeln!(
                s,
                "untrusted client   rejected by machine-a: {status}; the client saw {why}; filed in rejected/certs"
            )
        }
        _ => writeln!(s, "untrusted client   NOT rejected as expected"),
    };
    for (ok, what) in &checks.all {
        let _ = writeln!(s, "  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
    print!("{s}");
    let all_ok = checks.all.iter().all(|(ok, _)| *ok);
    if args.keep {
        let kept = tmp.keep();
        println!("\nkept {}: machine-a.toml, machine-b.toml, users.toml, PKI folders, vaults", kept.display());
    }
    if all_ok {
        println!("\ndemo complete: every check held; no private key left its vault.");
    }
    Ok(all_ok)
}
