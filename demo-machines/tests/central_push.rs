//! GDS push to the REAL machine-a binary (issue 6: "the central can push to a running machine-a"; "rotation by push
//! while a client session stays connected").
//!
//! Everything is made at run time in temporary directories: machine-a's vaultd container with its key and a
//! self-signed certificate, its users file (an administrator for the central, an operator for the line client), its
//! PKI folder and TOML (`[push] enabled = true`, `sealed_keys = true`); the central (`certvault-central` as a
//! library) with its own CA, its OPC UA client key and its key maker in a second vaultd; the line client's key in a
//! third. machine-a runs as a child process (`CARGO_BIN_EXE_machine-a`), its URL read from its "ready" record; a
//! guard kills it on every way out, the vaultd handles kill theirs.
//!
//! The central pushes (CreateSigningRequest with a new key made inside machine-a's vault, its CA issues,
//! UpdateCertificate, ApplyChanges, CA and CRL into the trust list) while a session opened before keeps reading a
//! line value; then machine-a is restarted from the unchanged TOML and serves the new certificate with the new key;
//! then a second rotation with a key the central made and sealed to machine-a's vault. A push with a wrong
//! administrator password is refused and changes nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use certvault::provision::Recipient;
use certvault::KeyStore;
use certvault_central::push::{self, KeySource, PushError, PushRequest, PushTarget};
use certvault_central::registry::{self, Entitlement};
use certvault_central::{Central, Db};
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, ConnectionState, Session, SessionOptions, UserIdentity};
use certvault_opcua::pki::{split_chain, Cert, PkiStore};
use certvault_tests::machine::cheap_hash;
use certvault_tests::{identity, init_tracing, self_signed, Vaultd};
use demo_machines::namespace::{LineNodes, NAMESPACE_URI};
use demo_machines::records::ServerEvent;
use opcua_types::{NodeId, StatusCode, VariableId, Variant};

const MACHINE_URI: &str = "urn:certvault:test:machine-a";
const CENTRAL_URI: &str = "urn:certvault:test:central";
const LINE_CLIENT_URI: &str = "urn:certvault:test:line-client";
const ADMIN: &str = "gds-admin";
const ADMIN_PASSWORD: &str = "s3cret-gds-admin";
const OPERATOR: &str = "operator";
const OPERATOR_PASSWORD: &str = "s3cret-operator";
/// The serial of every test container (`certvault_tests::Vaultd`): machine-a's dongle, as the central knows it.
const DEVICE: &str = "CV-OPCUA-TEST";
const CA: &str = "plant";
const STEP: Duration = Duration::from_secs(20);

fn vaultd_exe() -> &'static str {
    env!("CARGO_BIN_EXE_demo-vaultd")
}

/// The machine-a child process; killed and reaped when dropped (also on panic).
struct MachineA {
    child: Option<Child>,
    events: mpsc::Receiver<ServerEvent>,
    url: String,
    thumbprint: String,
}

impl MachineA {
    /// Starts the real binary on `config` and waits for its "ready" record.
    fn start(config: &Path) -> MachineA {
        let mut child = Command::new(env!("CARGO_BIN_EXE_machine-a"))
            .arg("--config")
            .arg(config)
            .env("MACHINE_LOG", std::env::var("MACHINE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting machine-a");
        let (out, err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
        // The guard exists before anything below can panic.
        let (tx, events) = mpsc::channel();
        let mut machine = MachineA { child: Some(child), events, url: String::new(), thumbprint: String::new() };
        // Forwarded through eprintln!, which the test harness captures and shows on failure.
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("machine-a: {line}");
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<ServerEvent>(&line) {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("machine-a stdout (not a record): {line}"),
                }
            }
        });
        match machine.events.recv_timeout(STEP) {
            Ok(ServerEvent::Ready { endpoint_url, certificate_thumbprint, .. }) => {
                machine.url = endpoint_url;
                machine.thumbprint = certificate_thumbprint;
            }
            other => {
                let status = machine.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                panic!("machine-a did not report ready: {other:?} (exit status {status:?}); its log is above");
            }
        }
        machine
    }

    /// SIGTERM; waits for the "stopped" record and the exit.
    fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM)
            .expect("SIGTERM to machine-a");
        let deadline = Instant::now() + STEP;
        let mut stopped = false;
        while Instant::now() < deadline && !stopped {
            stopped = matches!(self.events.recv_timeout(Duration::from_millis(200)), Ok(ServerEvent::Stopped { .. }));
        }
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("machine-a did not exit within {STEP:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(stopped, "machine-a printed its stopped record");
        status
    }
}

impl Drop for MachineA {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// machine-a's files, vault and process, the central with its CA and vault, and the line client's identity.
struct Fixture {
    /// Declared first: dropped (killed) before the vaults it uses.
    machine: Option<MachineA>,
    dir: tempfile::TempDir,
    config: PathBuf,
    machine_vault: Vaultd,
    central_vault: Vaultd,
    /// Holds the line client's key.
    _client_vault: Vaultd,
    /// machine-a's certificate at start (self-signed).
    initial_certificate: Vec<u8>,
    central: Central,
    ca_certificate: Vec<u8>,
    target: PushTarget,
    line_client: LocalIdentity,
}

impl Fixture {
    async fn start() -> Fixture {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let machine_vault = Vaultd::start(vaultd_exe());
        let central_vault = Vaultd::start(vaultd_exe());
        let client_vault = Vaultd::start(vaultd_exe());
        // A transport key, so that the central can seal keys to this vault (`[push] sealed_keys`).
        machine_vault.client().device_init().expect("device init").transport_key.expect("a transport key");

        // machine-a: its key inside its vault, a self-signed certificate for 127.0.0.1, users, PKI folder, TOML.
        let key = machine_vault.generate_rsa("machine-a", 2048);
        let initial_certificate = self_signed(&key, "Machine A", MACHINE_URI);
        let own = dir.path().join("pki/own/certs");
        std::fs::create_dir_all(&own).expect("own certs folder");
        std::fs::write(own.join("machine-a.der"), &initial_certificate).expect("certificate file");
        let users = format!(
            "[[user]]\nname = \"{ADMIN}\"\npassword = \"{}\"\nrole = \"administrator\"\n\n\
             [[user]]\nname = \"{OPERATOR}\"\npassword = \"{}\"\nrole = \"operator\"\n",
            cheap_hash(ADMIN_PASSWORD),
            cheap_hash(OPERATOR_PASSWORD)
        );
        std::fs::write(dir.path().join("users.toml"), users).expect("users file");
        let config = dir.path().join("machine-a.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
endpoint_url = "opc.tcp://127.0.0.1:0/"
application_uri = "{MACHINE_URI}"
application_name = "Machine A (push test)"

[identity]
key = "{}"
certificate = "pki/own/certs/machine-a.der"

[security]
policies = ["Aes256_Sha256_RsaPss", "Basic256Sha256"]
modes = ["SignAndEncrypt"]
pki = "pki"

[users]
anonymous = false
file = "users.toml"

[push]
enabled = true
sealed_keys = true
"#,
                machine_vault.key_uri("machine-a")
            ),
        )
        .expect("machine-a.toml");

        // The central: SQLite file, its CA's key in its vault, machine-a's dongle entitled.
        let db = Db::open(dir.path().join("central.sqlite").to_str().expect("utf-8")).await.expect("database");
        let central = Central::new(db);
        central_vault.generate_rsa("plant-ca", 2048);
        central.create_ca(CA, &central_vault.key_uri("plant-ca"), "certvault plant CA", 365).await.expect("CA");
        let ca_certificate = central.ca(CA).await.expect("CA").certificate().to_vec();
        registry::add_device_type(central.db(), "opcua-server", "machine-a").await.expect("device type");
        registry::entitle(
            central.db(),
            &Entitlement { serial: DEVICE.into(), device_type: "opcua-server".into(), ..Default::default() },
        )
        .await
        .expect("entitle machine-a's dongle");

        // Mutual trust: machine-a trusts the central's and the line client's application certificates; the central
        // trusts machine-a's current certificate and its own CA (for the certificates it pushes).
        let central_client = identity(central_vault.generate_rsa("central-client", 2048), "central", CENTRAL_URI);
        let line_client = identity(client_vault.generate_rsa("line-client", 2048), "line client", LINE_CLIENT_URI);
        let machine_pki = PkiStore::create_or_open(dir.path().join("pki")).expect("machine-a's PKI folder");
        machine_pki.trust(central_client.certificate()).expect("trust the central");
        machine_pki.trust(line_client.certificate()).expect("trust the line client");
        let central_pki = Arc::new(PkiStore::create_or_open(dir.path().join("central-pki")).expect("central pki"));
        central_pki.trust(&initial_certificate).expect("trust machine-a");
        central_pki.trust(&ca_certificate).expect("trust the central's CA");

        let machine = MachineA::start(&config);
        let target = PushTarget {
            endpoint_url: machine.url.clone(),
            client: central_client,
            client_application_uri: CENTRAL_URI.into(),
            pki: central_pki,
            user: UserIdentity::user_name(ADMIN, ADMIN_PASSWORD),
            timeout: STEP,
        };
        Fixture {
            machine: Some(machine),
            dir,
            config,
            machine_vault,
            central_vault,
            _client_vault: client_vault,
            initial_certificate,
            central,
            ca_certificate,
            target,
            line_client,
        }
    }

    fn url(&self) -> &str {
        &self.machine.as_ref().expect("machine-a runs").url
    }

    fn request(&self, key: KeySource, trust_list: bool) -> PushRequest {
        PushRequest { device: DEVICE.into(), ca: CA.into(), validity_days: 30, key, trust_list }
    }

    /// A line client session (operator, SignAndEncrypt) that trusts `server_certificate` as given.
    async fn line_session(&self, server_certificate: &[u8]) -> certvault_opcua::Result<Session> {
        let mut channel = ClientOptions::new(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt);
        channel.identity = Some(self.line_client.clone());
        channel.server_certificate = Some(server_certificate.to_vec());
        channel.application_uri = Some(LINE_CLIENT_URI.into());
        channel.timeout = STEP;
        let mut options = SessionOptions::new(channel);
        options.identity = UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD);
        options.application_uri = Some(LINE_CLIENT_URI.into());
        options.session_name = "line client".into();
        Session::connect(self.url(), options).await
    }

    /// What the central lists for machine-a's dongle (serial numbers).
    async fn listed(&self) -> Vec<String> {
        registry::certificates(self.central.db(), Some(DEVICE))
            .await
            .expect("certificate list")
            .into_iter()
            .map(|c| c.serial_number)
            .collect()
    }

    fn certificate_file(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("pki/own/certs/machine-a.der")).expect("machine-a's certificate file")
    }
}

/// The server certificate of every endpoint a NEW connection discovers (GetEndpoints over policy None); all must
/// be the same. The leaf, and the whole chain as sent.
async fn served_certificate(url: &str) -> (Vec<u8>, Vec<u8>) {
    let client = certvault_opcua::client::connect(url, SecurityPolicy::None, SecurityMode::None, None, None)
        .await
        .expect("a discovery connection");
    let endpoints = client.get_endpoints().await.expect("GetEndpoints");
    let _ = client.close().await;
    let chains: Vec<Vec<u8>> = endpoints
        .iter()
        .map(|e| e.server_certificate.value.clone().filter(|c| !c.is_empty()).expect("a secure endpoint's certificate"))
        .collect();
    assert!(!chains.is_empty(), "machine-a offers endpoints");
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "every endpoint carries the same certificate");
    let chain = chains[0].clone();
    let leaf = split_chain(&chain).expect("a DER certificate chain").into_iter().next().expect("a leaf");
    (leaf, chain)
}

fn issued_by(leaf: &[u8], ca: &[u8]) -> bool {
    let chain = [Cert::from_der(leaf).expect("leaf"), Cert::from_der(ca).expect("CA")];
    certvault_opcua::pki::check_chain_signatures(&chain).is_ok()
}

fn spki(der: &[u8]) -> Vec<u8> {
    Cert::from_der(der).expect("certificate").spki().to_vec()
}

fn thumbprint(der: &[u8]) -> String {
    demo_machines::certs::thumbprint(der).expect("thumbprint")
}

/// The filling line's node ids: its namespace index from the server's NamespaceArray.
async fn line_nodes(session: &Session) -> LineNodes {
    let array = session.read_value(&NodeId::from(VariableId::Server_NamespaceArray)).await.expect("NamespaceArray");
    let Variant::Array(array) = array else { panic!("NamespaceArray is not an array: {array:?}") };
    let ns = array
        .values
        .iter()
        .position(|v| matches!(v, Variant::String(s) if s.as_ref() == NAMESPACE_URI))
        .expect("machine-a has the filling line's namespace");
    LineNodes::in_namespace(u16::try_from(ns).expect("namespace index"))
}

/// A session that keeps reading a value in a background task, counting reads and collecting every error.
struct Reader {
    reads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Session, Vec<String>)>,
}

impl Reader {
    fn start(session: Session, node: NodeId) -> Reader {
        let (reads, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let task = {
            let (reads, stop) = (reads.clone(), stop.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match session.read_value(&node).await {
                        Ok(Variant::Double(_)) => {
                            reads.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(other) => errors.push(format!("read {other:?}, not a Double")),
                        Err(e) => errors.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (session, errors)
            })
        };
        Reader { reads, stop, task }
    }

    fn count(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Waits until `more` reads succeeded after now.
    async fn wait_for(&self, more: u64) -> u64 {
        let target = self.count() + more;
        let deadline = Instant::now() + STEP;
        while self.count() < target {
            assert!(Instant::now() < deadline, "the reading session stalled at {} reads", self.count());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count()
    }

    async fn finish(self) -> (Session, Vec<String>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let (session, errors) = self.task.await.expect("the reading task");
        let reads = self.reads.load(Ordering::SeqCst);
        (session, errors, reads)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_rotates_a_running_machine_a_while_a_session_keeps_reading() {
    let mut fx = Fixture::start().await;
    let initial = fx.initial_certificate.clone();
    assert_eq!(fx.machine.as_ref().expect("running").thumbprint, thumbprint(&initial), "ready record");
    assert_eq!(served_certificate(fx.url()).await.0, initial);

    // The line client: a session opened before the push, reading Temperature in a loop.
    let session = fx.line_session(&initial).await.expect("the line client's session");
    let nodes = line_nodes(&session).await;
    let channel_before = session.channel().channel_state().secure_channel_id;
    let reader = Reader::start(session, nodes.temperature.clone());
    let before = reader.wait_for(5).await;

    // The push: machine-a makes the new key inside its vault (CreateSigningRequest), the central's CA issues,
    // UpdateCertificate, ApplyChanges, and the CA with its CRL into machine-a's trust list.
    let keys_before = fx.machine_vault.client().list().expect("key list");
    let report = push::push(&fx.central, &fx.target, &fx.request(KeySource::Server, true))
        .await
        .expect("the push to the running machine-a");
    let during = reader.count() - before;
    assert!(during > 0, "the running session read while the push ran");
    assert_eq!(report.key_made_by, "server");
    assert!(report.trust_list);
    assert_eq!(report.policy, "Aes256_Sha256_RsaPss", "the strongest policy both sides offer");
    let new = report.certificate.clone();

    // A new connection sees the new certificate, the central's CA issued it, for a new key.
    let (served, chain) = served_certificate(fx.url()).await;
    assert_eq!(served, new, "GetEndpoints on a new connection: the issued certificate");
    assert!(chain.starts_with(&new), "the served chain starts with the leaf");
    assert!(issued_by(&new, &fx.ca_certificate), "issued by the central's CA");
    assert_ne!(spki(&new), spki(&initial), "a new key");
    let cert = Cert::from_der(&new).expect("new certificate");
    assert_eq!(cert.uris(), [MACHINE_URI.to_owned()], "the ApplicationUri carried over");
    assert!(cert.ip_addresses().iter().any(|ip| ip.is_loopback()), "the host names carried over");
    // The new key was made inside machine-a's vault, labelled as the GDS successor of "machine-a".
    let keys = fx.machine_vault.client().list().expect("key list");
    assert_eq!(keys.len(), keys_before.len() + 1, "one new key in machine-a's vault");
    let made = keys.iter().find(|k| k.spki_der == spki(&new)).expect("the certified key is in machine-a's vault");
    assert!(made.label.starts_with("machine-a.gds-"), "{}", made.label);
    assert!(made.made_inside, "CreateSigningRequest made it inside the vault");
    // A fresh SignAndEncrypt session to the new certificate: the OPN reply verifies with the new key.
    let fresh = fx.line_session(&new).await.expect("a new session with the new certificate");
    assert!(matches!(fresh.read_value(&nodes.temperature).await, Ok(Variant::Double(_))));
    let _ = fresh.close().await;
    assert!(fx.line_session(&initial).await.is_err(), "the old certificate opens no new channel");

    // The session opened before kept reading on its channel, without a single error or reconnect.
    reader.wait_for(5).await;
    let (session, errors, reads) = reader.finish().await;
    assert!(errors.is_empty(), "the running session saw errors: {errors:?}");
    assert!(reads >= before + 5, "reads before the push {before}, in all {reads}");
    assert_eq!(*session.state().borrow(), ConnectionState::Connected);
    assert_eq!(session.channel().channel_state().secure_channel_id, channel_before, "the same channel throughout");
    eprintln!("the line client read {reads} times ({before} before the push, {during} during it) without an error");
    let _ = session.close().await;

    // The central lists the certificate; the trust list holds its CA and CRL; the certificate file is rewritten.
    assert_eq!(fx.listed().await, vec![report.serial_number.clone()], "the central lists the pushed certificate");
    let admin = push::connect(&fx.target).await.expect("an administrator session");
    let trust = admin.read_trust_list(None).await.expect("TrustList Read");
    let _ = admin.close().await;
    let trusted: Vec<Vec<u8>> =
        trust.trusted_certificates.unwrap_or_default().into_iter().filter_map(|b| b.value).collect();
    assert!(trusted.contains(&fx.ca_certificate), "the central's CA is in machine-a's trust list");
    assert_eq!(trust.trusted_crls.unwrap_or_default().len(), 1, "with its CRL");
    let file = fx.certificate_file();
    assert!(file.starts_with(&new), "machine-a's [identity] certificate file holds the new certificate");

    // Restart from the unchanged TOML: the certificate file pairs with the key "machine-a.gds-..." at start.
    let status = fx.machine.take().expect("running").stop();
    assert!(status.success(), "machine-a exits cleanly on SIGTERM: {status}");
    fx.machine = Some(MachineA::start(&fx.config));
    assert_eq!(fx.machine.as_ref().expect("running").thumbprint, thumbprint(&new), "the ready record");
    assert_eq!(served_certificate(fx.url()).await.0, new, "served after the restart");
    let after_restart = fx.line_session(&new).await.expect("a session to the restarted machine-a (new key signs)");
    assert!(matches!(after_restart.read_value(&nodes.temperature).await, Ok(Variant::Double(_))));
    let _ = after_restart.close().await;

    // A second rotation on the restarted machine-a, the key made by the central and sealed to machine-a's vault
    // (`[push] sealed_keys = true`); the central judges machine-a's certificate through its CA now.
    fx.target.endpoint_url = fx.url().to_owned();
    let transport = fx.machine_vault.client().device_info().expect("device info").transport_key.expect("transport");
    let sealed = KeySource::Central {
        maker: Arc::new(fx.central_vault.client()),
        transport: Some(Recipient::new(transport.spki_der)),
    };
    let second = push::push(&fx.central, &fx.target, &fx.request(sealed, false)).await.expect("the sealed push");
    assert_eq!(second.key_made_by, "central");
    assert_eq!(served_certificate(fx.url()).await.0, second.certificate, "the central-made key's certificate");
    let keys = fx.machine_vault.client().list().expect("key list");
    let imported = keys.iter().find(|k| k.spki_der == spki(&second.certificate)).expect("imported into the vault");
    assert!(imported.label.starts_with("machine-a.gds-") && !imported.made_inside, "{imported:?}");
    let session = fx.line_session(&second.certificate).await.expect("a session to the central-made key");
    assert!(matches!(session.read_value(&nodes.temperature).await, Ok(Variant::Double(_))));
    let _ = session.close().await;
    assert_eq!(fx.listed().await.len(), 2, "both pushed certificates are listed");
    assert!(fx.certificate_file().starts_with(&second.certificate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_a_wrong_administrator_password_is_refused_and_changes_nothing() {
    let fx = Fixture::start().await;
    let initial = fx.initial_certificate.clone();
    let keys_before = fx.machine_vault.client().list().expect("key list").len();
    let mut target = fx.target.clone();
    target.user = UserIdentity::user_name(ADMIN, "not-the-password");
    let err = push::push(&fx.central, &target, &fx.request(KeySource::Server, true))
        .await
        .expect_err("a wrong administrator password");
    let text = err.to_string();
    let PushError::Connect { url, source } = &err else { panic!("refused at the wrong step: {err:?}") };
    assert_eq!(url, fx.url());
    assert!(
        matches!(source.status_code(), StatusCode::BadUserAccessDenied | StatusCode::BadIdentityTokenRejected),
        "the session is refused for the user: {text}"
    );
    assert!(text.contains(fx.url()), "the error names machine-a: {text}");
    eprintln!("refused as expected: {text}");

    // An operator is no administrator either: CreateSigningRequest is refused, before anything is made.
    let mut operator = fx.target.clone();
    operator.user = UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD);
    let err = push::push(&fx.central, &operator, &fx.request(KeySource::Server, false))
        .await
        .expect_err("an operator may not push");
    let PushError::Refused { step, status, .. } = &err else { panic!("refused at the wrong step: {err:?}") };
    assert_eq!(*step, "CreateSigningRequest", "{err}");
    assert_eq!(*status, StatusCode::BadUserAccessDenied, "{err}");

    // Nothing changed: machine-a serves the old certificate, no key was made, nothing issued, the file is as it was.
    assert_eq!(served_certificate(fx.url()).await.0, initial, "machine-a still serves the old certificate");
    assert_eq!(fx.machine_vault.client().list().expect("key list").len(), keys_before, "no key was made");
    assert!(fx.listed().await.is_empty(), "the central issued nothing");
    assert_eq!(fx.certificate_file(), initial);
    let session = fx.line_session(&initial).await.expect("clients still connect with the old certificate");
    let _ = session.close().await;
    // The right password works on the same machine-a (the refusals above were about the user, nothing else).
    let report = push::push(&fx.central, &fx.target, &fx.request(KeySource::Server, false)).await.expect("push");
    assert_eq!(served_certificate(fx.url()).await.0, report.certificate);
}
