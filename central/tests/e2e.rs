//! End to end on real processes and real files: a central vaultd (update-signing key, CA key, backup key), device
//! vaultds (dongles), certvault's CLI (`certvault request` / `certvault apply`, built here as
//! `central-test-certvault`), the central's CLI and its HTTP API, and `openssl ca` as the external CA.
//! Every refused file must leave the central's database and the dongle's state as they were.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use certvault_central::Db;

const PIN: &str = "123456";
const ADMIN_PIN: &str = "admin-pin-42";
const URI: &str = "urn:machine-a";

fn certvault_exe() -> &'static str {
    env!("CARGO_BIN_EXE_central-test-certvault")
}

fn central_exe() -> &'static str {
    env!("CARGO_BIN_EXE_certvault-central")
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stdout of a command that must succeed.
fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of a command that must fail, which must say `expect`.
fn refused(out: Output, what: &str, expect: &str) -> String {
    assert!(!out.status.success(), "{what} should have failed: {}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(expect), "{what}: expected {expect:?} in the error: {}", show(&out));
    err
}

/// A dongle: a container made with `certvault init` and served by its own vaultd.
struct Dongle {
    serial: String,
    dir: PathBuf,
    socket: PathBuf,
    _daemon: Proc,
}

impl Dongle {
    fn start(root: &Path, serial: &str) -> Dongle {
        let dir = root.join(serial);
        std::fs::create_dir_all(&dir).unwrap();
        let container = dir.join("dongle.cvault");
        let out = Command::new(certvault_exe())
            .args(["init", "--serial", serial, "--kdf-memory-kib", "256", "--file"])
            .arg(&container)
            .env("CERTVAULT_PIN", PIN)
            .env("CERTVAULT_ADMIN_PIN", ADMIN_PIN)
            .output()
            .unwrap();
        ok(out, "certvault init");
        let socket = dir.join("vaultd.sock");
        let child = certvault::daemon::launch::start_vaultd(
            Path::new(env!("CARGO_BIN_EXE_central-test-vaultd")),
            &["--container".as_ref(), container.as_os_str()],
            &socket,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Dongle { serial: serial.into(), dir, socket, _daemon: Proc(child) }
    }

    /// Runs `certvault ARGS` against this dongle.
    fn cv(&self, args: &[&str]) -> Output {
        Command::new(certvault_exe())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("CERTVAULT_PIN", PIN)
            .env("CERTVAULT_ADMIN_PIN", ADMIN_PIN)
            .env_remove("CERTVAULT_PKCS11")
            .output()
            .unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// What the dongle holds: device state (counter, outstanding request, pinned central) and every key.
    fn state(&self) -> String {
        let device = ok(self.cv(&["device", "show"]), "device show");
        let keys = ok(self.cv(&["list"]), "list");
        format!("{device}\n{keys}")
    }

    /// The SHA-256 fingerprint `certvault list` shows for `label`.
    fn fingerprint(&self, label: &str) -> Option<String> {
        ok(self.cv(&["list"]), "list")
            .lines()
            .find(|l| l.split('\t').next() == Some(label))
            .and_then(|l| l.split('\t').find_map(|f| f.strip_prefix("sha256=").map(str::to_owned)))
    }

    fn trust(&self, central_pem: &Path) {
        ok(self.cv(&["device", "trust-central", "--cert", &central_pem.display().to_string()]), "trust-central");
    }
}

/// The central: its vaultd, its configuration and database, and an `openssl ca` as the external CA.
struct World {
    dir: tempfile::TempDir,
    central_vault: Dongle,
    config: PathBuf,
    db: String,
    signer_pem: PathBuf,
    ext: common::OpensslCa,
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new().prefix("cve2e").tempdir_in("/tmp").unwrap();
        let central_vault = Dongle::start(dir.path(), "CENTRAL-1");
        let pin = dir.path().join("central.pin");
        std::fs::write(&pin, PIN).unwrap();
        let signer_pem = dir.path().join("update-signer.pem");
        // The operator's set-up of the central's vault, as in docs/central.md.
        ok(central_vault.cv(&["keygen", "--label", "update-signer", "--alg", "p256"]), "keygen update-signer");
        ok(
            central_vault.cv(&[
                "self-sign",
                "--label",
                "update-signer",
                "--cn",
                "certvault central updates",
                "--days",
                "3650",
                "--out",
                &signer_pem.display().to_string(),
            ]),
            "self-sign update-signer",
        );
        ok(central_vault.cv(&["keygen", "--label", "plant-ca", "--alg", "p256"]), "keygen plant-ca");
        let uri = |label: &str| {
            format!("vaultd:object={label}?socket={}&pin-source=file:{}", central_vault.socket.display(), pin.display())
        };
        let ext = common::OpensslCa::new();
        let external = ext.external("corp");
        let command: Vec<String> = external.command.iter().map(|c| toml_str(c)).collect();
        let db = dir.path().join("central.db").display().to_string();
        let config = dir.path().join("central.toml");
        std::fs::write(
            &config,
            format!(
                "database = {db}\nlisten = \"127.0.0.1:0\"\n\n[update_signer]\nkey_uri = {key}\ncertificate = {cert}\n\n\
                 [key_maker]\nsocket = {sock}\npin_source = {pin}\nbackup_key = \"central-backup\"\n\n\
                 [external.corp]\ncommand = [{command}]\ncsr_input = \"file\"\ntimeout_secs = 60\n",
                db = toml_str(&db),
                key = toml_str(&uri("update-signer")),
                cert = toml_str(&signer_pem.display().to_string()),
                sock = toml_str(&central_vault.socket.display().to_string()),
                pin = toml_str(&format!("file:{}", pin.display())),
                command = command.join(", "),
            ),
        )
        .unwrap();
        let plant_uri = uri("plant-ca");
        let w = World { dir, central_vault, config, db, signer_pem, ext };
        ok(w.central(&["device-type", "add", "plc"]), "device-type add");
        ok(w.central(&["ca", "create", "plant", "--key", &plant_uri, "--common-name", "Plant CA"]), "ca create");
        w
    }

    fn central(&self, args: &[&str]) -> Output {
        Command::new(central_exe())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("CERTVAULT_LOG", "warn")
            .output()
            .unwrap()
    }

    /// A new dongle that trusts this central.
    fn dongle(&self, serial: &str) -> Dongle {
        let d = Dongle::start(self.dir.path(), serial);
        d.trust(&self.signer_pem);
        d
    }

    fn entitle(&self, d: &Dongle) {
        ok(self.central(&["device", "entitle", &d.serial, "--type", "plc"]), "entitle");
    }

    fn order(&self, d: &Dongle, label: &str, alg: &str, issuer: &str, key_origin: &str) {
        self.order_for_hosts(d, label, alg, issuer, key_origin, &["machine-a"]);
    }

    fn order_for_hosts(&self, d: &Dongle, label: &str, alg: &str, issuer: &str, key_origin: &str, hosts: &[&str]) {
        self.order_by_serial(&d.serial, label, alg, issuer, key_origin, hosts);
    }

    fn order_by_serial(&self, serial: &str, label: &str, alg: &str, issuer: &str, key_origin: &str, hosts: &[&str]) {
        let mut args = vec![
            "order",
            "create",
            "--device",
            serial,
            "--label",
            label,
            "--algorithm",
            alg,
            "--application-uri",
            URI,
            "--days",
            "365",
            "--issuer",
            issuer,
            "--key-origin",
            key_origin,
        ];
        for h in hosts {
            args.extend(["--host", h]);
        }
        ok(self.central(&args), "order create");
    }

    /// Statuses of the dongle's orders.
    fn order_statuses(&self, d: &Dongle) -> Vec<String> {
        let text = ok(self.central(&["order", "list", "--device", &d.serial]), "order list");
        let orders: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        orders.iter().map(|o| o["status"].as_str().unwrap_or_default().to_owned()).collect()
    }

    /// Every table of the central's database, as text.
    fn snapshot(&self) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let db = Db::open(&self.db).await.unwrap();
            let s = common::snapshot(&db).await;
            db.close().await;
            s
        })
    }

    /// One full cycle through the CLIs: `certvault request` -> `certvault-central process` -> `certvault apply`
    /// -> `certvault-central receipt`. Returns the time of request -> update -> apply.
    fn cycle(&self, d: &Dongle, items: &[&str], name: &str) -> Duration {
        let (req, upd, rcpt) =
            (d.path(&format!("{name}.req")), d.path(&format!("{name}.upd")), d.path(&format!("{name}.rcpt")));
        let mut args = vec!["request"];
        for i in items {
            args.extend(["--item", i]);
        }
        args.extend(["--out", &req]);
        let t0 = Instant::now();
        ok(d.cv(&args), "certvault request");
        ok(self.central(&["process", &req, "--out", &upd]), "certvault-central process");
        ok(d.cv(&["apply", "--in", &upd, "--receipt", &rcpt]), "certvault apply");
        let took = t0.elapsed();
        let outcome = ok(self.central(&["receipt", &rcpt]), "certvault-central receipt");
        assert!(outcome.contains("fulfilled_orders"), "{outcome}");
        println!("request -> update -> apply cycle ({name}): {took:?}");
        took
    }
}

fn pem_file(path: &str) -> Vec<Vec<u8>> {
    certvault_central::issuer::pem_certificates(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn each_issuer_and_a_central_made_key_restored_to_a_replacement_dongle() {
    let w = World::new();
    let a = w.dongle("CV-0001");
    w.entitle(&a);

    // Self-signed: the device makes key and certificate inside; the central checks and records it.
    w.order(&a, "self", "p256", "self-signed", "device");
    w.cycle(&a, &["label=self,alg=p256,uri=urn:machine-a,host=machine-a,origin=self-signed"], "self-signed");
    let exported = a.path("self.pem");
    ok(a.cv(&["export-cert", "--label", "self", "--out", &exported]), "export-cert self");
    assert_eq!(pem_file(&exported).len(), 1);

    // The central's own CA (its key in the central's vaultd).
    w.order(&a, "opcua", "rsa2048", "ca:plant", "device");
    w.cycle(&a, &["label=opcua,alg=rsa2048,uri=urn:machine-a,host=machine-a,origin=device"], "own CA");
    let exported = a.path("opcua.pem");
    ok(a.cv(&["export-cert", "--label", "opcua", "--out", &exported]), "export-cert opcua");
    let chain = pem_file(&exported);
    assert_eq!(chain.len(), 2, "leaf and the plant CA");
    let ca_pem = a.path("plant-ca.pem");
    common::write_pem(Path::new(&ca_pem), "CERTIFICATE", &chain[1]);
    common::openssl(&["verify", "-CAfile", &ca_pem, &exported]);

    // An external CA: `openssl ca` behind the plug-in.
    w.order(&a, "ext", "rsa2048", "external:corp", "device");
    w.cycle(&a, &["label=ext,alg=rsa2048,uri=urn:machine-a,host=machine-a"], "external CA");
    let exported = a.path("ext.pem");
    ok(a.cv(&["export-cert", "--label", "ext", "--out", &exported]), "export-cert ext");
    common::openssl(&["verify", "-CAfile", &w.ext.ca_pem().display().to_string(), &exported]);

    // A key the central makes inside its vaultd, sealed to the dongle and to the backup key.
    w.order(&a, "made", "p256", "ca:plant", "central");
    w.cycle(&a, &["label=made,alg=p256,uri=urn:machine-a,origin=central"], "central-made key");
    let made = a.fingerprint("made").expect("the central-made key is in the dongle");
    assert!(ok(a.cv(&["list"]), "list").lines().any(|l| l.starts_with("made\t") && l.contains("imported")));
    assert!(w.snapshot().contains("key_backups=1"));
    // The backup key is in the central's vault, unwrap-only; the made key is not.
    assert!(w.central_vault.fingerprint("central-backup").is_some());
    assert!(w.central_vault.fingerprint("made").is_none());

    assert!(w.order_statuses(&a).iter().all(|s| s == "fulfilled"), "{:?}", w.order_statuses(&a));
    let unconfirmed = ok(w.central(&["device", "unconfirmed"]), "unconfirmed");
    assert!(!unconfirmed.contains("CV-0001"), "{unconfirmed}");

    // The dongle is lost: a replacement gets the backed-up key, re-sealed to it inside the central's vault.
    let b = w.dongle("CV-0002");
    ok(w.central(&["device", "replace", "CV-0001", "CV-0002"]), "device replace");
    w.order(&b, "self", "p256", "self-signed", "device");
    w.cycle(&b, &["label=self,alg=p256,uri=urn:machine-a,origin=self-signed"], "restore");
    assert_eq!(b.fingerprint("made").as_deref(), Some(made.as_str()), "the same key, restored");
    let (old, new) = (a.path("made.pem"), b.path("made.pem"));
    ok(a.cv(&["export-cert", "--label", "made", "--out", &old]), "export-cert made (old)");
    ok(b.cv(&["export-cert", "--label", "made", "--out", &new]), "export-cert made (new)");
    assert_eq!(pem_file(&old), pem_file(&new), "the same certificate");
    // The old dongle lost its entitlement.
    let req = a.path("after-replace.req");
    ok(a.cv(&["request", "--item", "label=x,alg=p256,uri=urn:machine-a,origin=self-signed", "--out", &req]), "request");
    refused(w.central(&["process", &req, "--out", &a.path("x.upd")]), "old dongle", "not entitled");
}

/// `certvault-central serve` on an OS-picked port.
struct Server {
    addr: SocketAddr,
    _proc: Proc,
}

impl Server {
    fn start(w: &World) -> Server {
        let mut child = Command::new(central_exe())
            .arg("--config")
            .arg(&w.config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CERTVAULT_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
        Server { addr, _proc: Proc(child) }
    }

    /// POSTs `body` and returns the status and the body of the answer.
    fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: central\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
        let mut body = raw[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            let mut out = Vec::new();
            let mut rest = body.as_slice();
            loop {
                let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
                rest = &rest[nl + 4 + n..];
            }
            body = out;
        }
        (status, body)
    }
}

/// Flips one byte of a copy of `file` at `at` (from the start, or from the end when negative) into `out`.
fn tamper(file: &str, out: &str, at: isize) {
    let mut bytes = std::fs::read(file).unwrap();
    let i = if at < 0 { bytes.len() - at.unsigned_abs() } else { at.unsigned_abs() };
    bytes[i] ^= 0x01;
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn refused_requests_and_updates_change_nothing() {
    let w = World::new();
    let a = w.dongle("CV-0001");
    let c = w.dongle("CV-0003");
    w.entitle(&a);
    w.order(&a, "opcua", "rsa2048", "ca:plant", "device");
    let server = Server::start(&w);

    // An unentitled device: registered once, then its entitlement withdrawn.
    w.entitle(&c);
    w.order(&c, "opcua", "rsa2048", "ca:plant", "device");
    ok(w.central(&["device", "disentitle", &c.serial]), "disentitle");
    let req_c = c.path("c.req");
    ok(c.cv(&["request", "--item", "label=opcua,alg=rsa2048,uri=urn:machine-a", "--out", &req_c]), "request c");
    let before = w.snapshot();
    refused(w.central(&["process", &req_c, "--out", &c.path("c.upd")]), "unentitled", "is not entitled");
    let (status, body) = server.post("/api/requests", &std::fs::read(&req_c).unwrap());
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(w.snapshot(), before, "an unentitled device changed nothing");

    // A forged request: one byte of the signature changed.
    let req = a.path("a.req");
    ok(
        a.cv(&["request", "--item", "label=opcua,alg=rsa2048,uri=urn:machine-a,host=machine-a", "--out", &req]),
        "request",
    );
    let forged = a.path("forged.req");
    tamper(&req, &forged, -1);
    refused(w.central(&["process", &forged, "--out", &a.path("f.upd")]), "forged", "signature does not verify");
    // One byte of the signed JSON changed (the counter digit).
    let text = std::fs::read(&req).unwrap();
    let at = text.windows(11).position(|w| w == b"\"counter\": ").expect("the JSON is in the file") + 11;
    tamper(&req, &forged, at as isize);
    refused(w.central(&["process", &forged, "--out", &a.path("f.upd")]), "changed request", "request refused");
    assert_eq!(w.snapshot(), before, "a forged request changed nothing");

    // The real one, over HTTP: no more 501.
    let (status, update) = server.post("/api/requests", &std::fs::read(&req).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&update));
    let upd = a.path("a.upd");
    std::fs::write(&upd, &update).unwrap();
    // The same request again: a replay.
    let after = w.snapshot();
    assert_ne!(after, before);
    let (status, body) = server.post("/api/requests", &std::fs::read(&req).unwrap());
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("replayed request"), "{}", String::from_utf8_lossy(&body));
    refused(w.central(&["process", &req, "--out", &a.path("r.upd")]), "replayed request", "replayed request");
    assert_eq!(w.snapshot(), after, "a replayed request changed nothing");

    // A tampered update: one byte of the signed JSON changed.
    let state_a = a.state();
    let tampered = a.path("tampered.upd");
    let at = update.windows(11).position(|w| w == b"\"counter\": ").expect("the JSON is in the file") + 11;
    tamper(&upd, &tampered, at as isize);
    let err =
        refused(a.cv(&["apply", "--in", &tampered, "--receipt", &a.path("t.rcpt")]), "tampered", "nothing changed");
    assert!(err.contains("changed after signing"), "{err}");
    tamper(&upd, &tampered, -1);
    refused(a.cv(&["apply", "--in", &tampered, "--receipt", &a.path("t.rcpt")]), "bad signature", "signature");
    assert_eq!(a.state(), state_a, "a tampered update changed nothing");
    assert!(!Path::new(&a.path("t.rcpt")).exists(), "no receipt for a refused update");

    // An update for another dongle.
    let state_c = c.state();
    refused(c.cv(&["apply", "--in", &upd, "--receipt", &c.path("x.rcpt")]), "other dongle", "is for dongle");
    assert_eq!(c.state(), state_c, "an update for another dongle changed nothing");

    // The real update, and its receipt over HTTP.
    let rcpt = a.path("a.rcpt");
    ok(a.cv(&["apply", "--in", &upd, "--receipt", &rcpt]), "apply");
    let (status, body) = server.post("/api/receipts", &std::fs::read(&rcpt).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(w.order_statuses(&a), vec!["fulfilled".to_owned()]);

    // The same update again: a replay.
    let state_a = a.state();
    refused(a.cv(&["apply", "--in", &upd, "--receipt", &a.path("again.rcpt")]), "replayed update", "nothing changed");
    assert_eq!(a.state(), state_a, "a replayed update changed nothing");
    // A receipt from another key: refused, nothing recorded.
    let before = w.snapshot();
    let (status, _) = server.post("/api/receipts", &std::fs::read(&rcpt).unwrap());
    assert_eq!(status, 409, "a receipt counts once");
    let bad = a.path("bad.rcpt");
    tamper(&rcpt, &bad, -1);
    let (status, body) = server.post("/api/receipts", &std::fs::read(&bad).unwrap());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(w.snapshot(), before);
}

/// machine-a (the test machine server: its namespace, users and trust list) serving with the key in the dongle and
/// the certificate the central issued for it; a client connects over SignAndEncrypt and sees that certificate.
#[test]
fn machine_a_serves_with_the_issued_certificate_from_the_dongle() {
    use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};

    let w = World::new();
    let a = w.dongle("CV-0001");
    w.entitle(&a);
    w.order_for_hosts(&a, "opcua", "rsa2048", "ca:plant", "device", &["localhost", "127.0.0.1"]);
    w.cycle(&a, &["label=opcua,alg=rsa2048,uri=urn:machine-a,host=localhost,host=127.0.0.1"], "machine-a");
    let exported = a.path("opcua.pem");
    ok(a.cv(&["export-cert", "--label", "opcua", "--out", &exported]), "export-cert");
    let issued = pem_file(&exported).remove(0);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // The server's key stays in the dongle: this process holds a handle to it in the dongle's vaultd.
        let uri: certvault::uri::KeyUri =
            format!("vaultd:object=opcua?socket={}&pin-value={PIN}", a.socket.display()).parse().unwrap();
        let key = certvault::store::open_key(&uri).unwrap();
        let users_vault = certvault_tests::Vaultd::start(env!("CARGO_BIN_EXE_central-test-vaultd"));
        let (k, cert) = (key.clone(), issued.clone());
        let machine = certvault_tests::machine::MachineServer::start_with_key(&users_vault, key, 16, move |b| {
            b.application_uri(URI).identity(k, cert).expect("the issued certificate fits the dongle's key")
        })
        .await;
        let client = certvault_tests::identity(certvault_tests::soft_key(2048, "client"), "client", "urn:client");
        machine.pki.trust(client.certificate()).unwrap();

        let plain = certvault_opcua::client::connect(
            machine.endpoint_url(),
            SecurityPolicy::None,
            SecurityMode::None,
            None,
            None,
        )
        .await
        .unwrap();
        let endpoints = plain.get_endpoints().await.unwrap();
        plain.close().await.unwrap();
        let secured: Vec<_> = endpoints.iter().filter(|e| e.server_certificate.value.is_some()).collect();
        assert!(!secured.is_empty());
        for e in &secured {
            assert_eq!(
                e.server_certificate.value.as_deref(),
                Some(issued.as_slice()),
                "the server presents the issued certificate"
            );
        }
        // SignAndEncrypt: the server signs and decrypts with the dongle's key, so the pair must match.
        let channel = certvault_opcua::client::connect(
            machine.endpoint_url(),
            SecurityPolicy::Basic256Sha256,
            SecurityMode::SignAndEncrypt,
            Some(client),
            Some(&issued),
        )
        .await
        .expect("a secured channel to machine-a with the issued certificate");
        assert!(!channel.get_endpoints().await.unwrap().is_empty());
        channel.close().await.unwrap();
    });
}

/// A SoftHSM2 token as the device: the request names the OAEP hash its `C_UnwrapKey` takes, the central's key maker
/// seals with that hash, and the token unwraps the central-made key into a non-extractable object.
#[test]
fn a_central_made_key_into_a_pkcs11_token_with_its_oaep_hash() {
    use certvault::pkcs11::softhsm;
    if !softhsm::available() {
        assert!(
            std::env::var_os("CERTVAULT_REQUIRE_SOFTHSM").is_none(),
            "CERTVAULT_REQUIRE_SOFTHSM is set but SoftHSM2 is missing"
        );
        eprintln!("SKIPPED: SoftHSM2 is not installed");
        return;
    }
    let w = World::new();
    let hsm = w.dir.path().join("hsm");
    std::fs::create_dir_all(&hsm).unwrap();
    let conf = softhsm::write_config(&hsm).unwrap();
    softhsm::init_token(&conf, "dongle-hsm", PIN, "12345678").unwrap();
    let uri = format!("pkcs11:token=dongle-hsm?module-path={}", softhsm::MODULE);
    let cv = |args: &[&str]| {
        Command::new(certvault_exe())
            .arg("--pkcs11")
            .arg(&uri)
            .args(args)
            .env("SOFTHSM2_CONF", &conf)
            .env("CERTVAULT_PIN", PIN)
            .output()
            .unwrap()
    };
    let p = |n: &str| hsm.join(n).display().to_string();
    ok(cv(&["device", "init"]), "device init on the token");
    ok(cv(&["device", "trust-central", "--cert", &w.signer_pem.display().to_string()]), "trust-central");
    let show = ok(cv(&["device", "show"]), "device show");
    let serial = show.lines().find_map(|l| l.strip_prefix("serial: ")).expect("a serial").trim().to_owned();
    ok(w.central(&["device", "entitle", &serial, "--type", "plc"]), "entitle");
    w.order_by_serial(&serial, "made", "p256", "ca:plant", "central", &[]);

    let t0 = Instant::now();
    ok(
        cv(&["request", "--item", "label=made,alg=p256,uri=urn:machine-a,origin=central", "--out", &p("req.p7")]),
        "request",
    );
    let sha1 = String::from_utf8_lossy(&std::fs::read(p("req.p7")).unwrap()).contains("\"transport_oaep\": \"sha1\"");
    ok(w.central(&["process", &p("req.p7"), "--out", &p("upd.p7")]), "process");
    let applied = ok(cv(&["apply", "--in", &p("upd.p7"), "--receipt", &p("rcpt.p7")]), "apply on the token");
    println!(
        "request -> update -> apply cycle (PKCS#11 token, OAEP {}): {:?}",
        if sha1 { "SHA-1" } else { "SHA-256" },
        t0.elapsed()
    );
    assert!(applied.contains("stored made (key made by the central)"), "{applied}");
    ok(w.central(&["receipt", &p("rcpt.p7")]), "receipt");
    let orders = ok(w.central(&["order", "list", "--device", &serial]), "order list");
    assert!(orders.contains("\"fulfilled\""), "{orders}");
}
