//! The demo in the test suite: it runs the `demo` binary (twice, so "runs again from scratch" is tested too) and
//! checks its exit code, the key lines of its summary, and that nothing of it is left behind: no process and no
//! temporary directory. Also the binaries' refusals of bad input.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn softhsm_missing() -> bool {
    if certvault::pkcs11::softhsm::available() {
        return false;
    }
    if std::env::var_os("CERTVAULT_REQUIRE_SOFTHSM").is_some() {
        panic!("SoftHSM2 is not installed but CERTVAULT_REQUIRE_SOFTHSM is set: install softhsm2 (scripts/test does)");
    }
    eprintln!("SKIPPED: the demo needs SoftHSM2 (apt-get install softhsm2, or run scripts/test)");
    true
}

fn run_demo() -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--duration", "3s"])
        .stdin(Stdio::null())
        .output()
        .expect("running the demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

/// The number at the start of the value of the summary line `label`.
fn count(stdout: &str, label: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label:?} line:\n{stdout}"));
    let value = line[label.len()..].split_whitespace().next().unwrap_or_default();
    value.parse().unwrap_or_else(|_| panic!("{line:?} does not give a count"))
}

/// The demo's temporary directory, from the PKI folder it prints.
fn temp_root(stdout: &str) -> String {
    let pki = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.contains("certvault-demo-") && l.ends_with("/machine-a/pki"))
        .unwrap_or_else(|| panic!("the demo printed no PKI folder:\n{stdout}"));
    pki.trim_end_matches("/machine-a/pki").to_owned()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn the_demo_tells_the_whole_story_and_runs_again_from_scratch() {
    if softhsm_missing() {
        return;
    }
    let mut roots = Vec::new();
    for run in 1..=2 {
        let (output, stdout) = run_demo();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}: the demo failed ({}):\n{stdout}\n{stderr}", output.status);
        for line in [
            "security policy    Aes256_Sha256_RsaPss",
            "security mode      SignAndEncrypt",
            "user               X.509 Machine B operator",
            "machine-a key      vaultd:serial=CV-MACHINE-A;object=machine-a?",
            "machine-b key      vaultd:serial=pkcs11-machine-b;object=machine-b?",
            "= pkcs11:token=machine-b;object=machine-b?module-path=",
            "CA key             vaultd:serial=CV-DEMO-CA;object=demo-ca?",
            "untrusted client   rejected by machine-a: BadCertificateUntrusted",
            "[ok] machine-a stopped cleanly on SIGTERM",
            "demo complete: every check held",
        ] {
            assert!(stdout.contains(line), "run {run}: no {line:?} in\n{stdout}");
        }
        assert!(!stdout.contains("[FAILED]"), "run {run}:\n{stdout}");
        assert!(count(&stdout, "A's vault audit") >= 3, "machine-a's key signed and decrypted:\n{stdout}");
        assert!(count(&stdout, "B's vault audit") >= 3, "machine-b's keys signed and decrypted:\n{stdout}");
        assert_eq!(count(&stdout, "CA vault audit"), 5, "the CA signed 4 certificates and a CRL:\n{stdout}");
        // The thumbprints machine-b reported are the certificates the CA issued.
        let thumb = |label: &str| {
            let line = stdout.lines().find(|l| l.starts_with(label)).unwrap_or_default();
            line[label.len()..].split_whitespace().next().unwrap_or_default().to_owned()
        };
        assert_eq!(thumb("machine-a cert").len(), 40, "{stdout}");
        assert_eq!(thumb("machine-b cert").len(), 40, "{stdout}");
        assert_ne!(thumb("machine-a cert"), thumb("machine-b cert"));

        let root = temp_root(&stdout);
        assert!(!Path::new(&root).exists(), "run {run}: {root} was left behind");
        let left = processes_mentioning(&root);
        assert!(left.is_empty(), "run {run}: processes left running: {left:?}");
        roots.push(root);
    }
    assert_ne!(roots[0], roots[1], "each run starts from a fresh directory");
}

#[test]
fn machine_a_refuses_security_none_in_policies() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("machine-a.toml");
    std::fs::write(
        &config,
        r#"
[server]
endpoint_url = "opc.tcp://127.0.0.1:0/"
application_uri = "urn:test:a"
[identity]
key = "vaultd:object=machine-a"
certificate = "a.der"
[security]
policies = ["None"]
modes = ["SignAndEncrypt"]
pki = "pki"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_machine-a")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("allow_none"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready record: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn machine_a_makes_password_hashes_for_the_users_file() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_machine-a"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let users = format!("[[user]]\nname = \"op\"\npassword = \"{}\"\nrole = \"operator\"\n", hash.trim());
    let db = certvault_opcua::server::UserDatabase::parse(&users).expect("a users file with that hash");
    assert_eq!(db.authenticate("op", b"s3cret").map(|p| p.name), Some("op".into()));
    assert!(db.authenticate("op", b"wrong").is_none());
}

#[test]
fn machine_b_refuses_a_key_file_and_a_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("machine-b.toml");
    std::fs::write(
        &config,
        r#"
[client]
server_url = "opc.tcp://127.0.0.1:4840/"
application_uri = "urn:test:b"
[identity]
key = "file:/etc/machine-b/key.pem"
certificate = "b.der"
[security]
pki = "pki"
[user]
name = "op"
password_file = "pw"
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_machine-b")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[identity] key") && stderr.contains("never files"), "{stderr}");

    let missing = dir.path().join("nope.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_machine-b")).arg("--config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

#[test]
fn machine_b_reports_a_failed_connection_with_a_non_zero_exit() {
    // A server that is not there: the report names the failed step, and the exit code is 1. The keys are opened
    // first, so this configuration points at a vault that does not exist either: that failure is reported too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("machine-b.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[client]
server_url = "opc.tcp://127.0.0.1:1/"
application_uri = "urn:test:b"
[identity]
key = "vaultd:object=machine-b?socket={}/no.sock"
certificate = "b.der"
[security]
pki = "pki"
[user]
name = "op"
password_file = "pw"
[run]
duration = "1s"
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_machine-b")).arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: demo_machines::records::Report =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("a JSON report on stdout");
    assert!(!report.ok);
    assert_eq!(report.steps.len(), 1, "{report:?}");
    assert_eq!(report.steps[0].status, "Failed");
    assert!(report.steps[0].detail.as_deref().unwrap_or_default().contains("no.sock"), "{report:?}");
}

/// The example configuration files in `demo-machines/config/` are what the README documents: they must parse.
#[test]
fn the_example_configuration_files_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let a = certvault_opcua::server::config::ConfigFile::load(&dir.join("machine-a.toml")).expect("machine-a.toml");
    assert!(!a.security.allow_none && !a.users.anonymous);
    assert_eq!(a.endpoints().unwrap().len(), 3);
    assert!(a.push.enabled, "machine-a accepts GDS push from its administrators");
    let b = demo_machines::client_config::ClientConfig::load(&dir.join("machine-b.toml")).expect("machine-b.toml");
    assert!(matches!(b.user().unwrap(), demo_machines::client_config::UserChoice::Certificate { .. }));
    // users.toml ships a placeholder instead of a password hash: refused until replaced by a real hash.
    let users = std::fs::read_to_string(dir.join("users.toml")).unwrap();
    let err = certvault_opcua::server::UserDatabase::parse(&users).expect_err("the placeholder is no hash");
    assert!(err.to_string().contains("PHC"), "{err}");
    let placeholder = "REPLACE-WITH-THE-OUTPUT-OF: machine-a --hash-password";
    assert!(users.contains(placeholder));
    let hash = certvault_opcua::server::UserDatabase::hash_password("pw").unwrap();
    let db = certvault_opcua::server::UserDatabase::parse(&users.replace(placeholder, &hash)).expect("users.toml");
    assert!(db.authenticate("operator", b"pw").is_some());
    let admin = db.authenticate("gds-admin", b"pw").expect("the GDS push account");
    assert_eq!(admin.role, certvault_opcua::server::access::UserRole::Administrator);
}
