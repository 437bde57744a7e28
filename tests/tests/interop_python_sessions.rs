//! Sessions and services with Python asyncua (opcua-asyncio 2.1.0) as the peer, both ways (issue 4's matrix):
//!
//! - the asyncua **client** (`ua_peer.py client-session`) against our machine server (keys in a real vaultd): every
//!   policy x mode x user token (anonymous, user name, X.509 made by the peer and trusted in our user trust list)
//!   reads, writes, browses `Machine`, calls `Add` and sees three `Counter` data changes; anonymous sessions must be
//!   refused the write and the call with BadUserAccessDenied; a wrong password is refused the same way;
//! - our **client** (application key and X.509 user key in a real vaultd) against the asyncua server
//!   (`ua_peer.py server`, one process for every cell): the same services over every policy x mode x token; a
//!   wrong password gets the code asyncua really sends.
//!
//! Cells run a few at a time. The peer is `tests/python/ua_peer.py` in the venv `scripts/test` makes
//! (`$CERTVAULT_PYTHON`); without that variable the tests skip with a message, except under CI. Run with
//! `--nocapture` to see the matrices.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{
    ClientOptions, MonitoredItemSpec, Session, SessionOptions, SubscriptionParams, UserIdentity,
};
use certvault_tests::client::next_changes;
use certvault_tests::machine::{MachineServer, OPERATOR, OPERATOR_PASSWORD, PEER_CERT_USER};
use certvault_tests::{identity, init_tracing, matrix_cases, self_signed, Matrix, Vaultd};
use futures_util::StreamExt;
use opcua_types::{NodeId, StatusCode, Variant};
use parking_lot::Mutex;
use serde_json::Value;

const PEER_CLIENT_URI: &str = "urn:certvault:interop:asyncua:client";
const OUR_CLIENT_URI: &str = "urn:certvault:test:client";
const PEER_PASSWORD: &str = "py-s3cret:with-colon";
/// Python clients (about 0.8 s of CPU each, mostly importing asyncua) at a time.
const PYTHON_CLIENTS_AT_ONCE: usize = 4;
/// Our sessions against the single-threaded asyncua server at a time.
const OUR_SESSIONS_AT_ONCE: usize = 3;
/// Bound for one cell.
const CELL_TIMEOUT: Duration = Duration::from_secs(60);

fn python() -> Option<PathBuf> {
    match std::env::var_os("CERTVAULT_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => panic!("CI is set but CERTVAULT_PYTHON is not: run scripts/test"),
        None => {
            eprintln!("SKIPPED: CERTVAULT_PYTHON is not set; scripts/test sets up the asyncua venv");
            None
        }
    }
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ua_peer.py")
}

fn mode_name(mode: SecurityMode) -> &'static str {
    match mode {
        SecurityMode::None => "None",
        SecurityMode::Sign => "Sign",
        SecurityMode::SignAndEncrypt => "SignAndEncrypt",
    }
}

/// A peer process, killed and reaped when the guard drops (a timeout or a failing test drops it early).
struct KillOnDrop(Arc<Mutex<Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut child = self.0.lock();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs one peer command (killed if the future is dropped or the bound passes) and returns its JSON line and
/// exit code.
async fn run_peer(python: &Path, args: &[String]) -> Result<(Value, Option<i32>), String> {
    let mut stderr = tempfile::tempfile().map_err(|e| format!("stderr file: {e}"))?;
    let mut child = Command::new(python)
        .arg(peer_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr.try_clone().map_err(|e| format!("stderr file: {e}"))?)
        .spawn()
        .map_err(|e| format!("run ua_peer.py: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let guard = KillOnDrop(Arc::new(Mutex::new(child)));
    let child = guard.0.clone();
    // Reading to the end returns when the process exits (or the guard kills it).
    let finished = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out);
        let status = child.lock().wait();
        (read, status, out)
    });
    let (read, status, out) = tokio::time::timeout(CELL_TIMEOUT, finished)
        .await
        .map_err(|_| format!("ua_peer.py {} did not finish in {CELL_TIMEOUT:?}", args[0]))?
        .map_err(|e| format!("ua_peer.py reader: {e}"))?;
    drop(guard);
    read.map_err(|e| format!("read ua_peer.py's output: {e}"))?;
    let code = status.map_err(|e| format!("wait for ua_peer.py: {e}"))?.code();
    let stdout = String::from_utf8_lossy(&out);
    let json = serde_json::from_str(stdout.trim()).map_err(|e| {
        let mut text = String::new();
        let _ = stderr.seek(SeekFrom::Start(0)).and_then(|_| stderr.read_to_string(&mut text));
        format!("ua_peer.py printed no JSON ({e}, exit {code:?}): {stdout}\nstderr: {text}")
    })?;
    Ok((json, code))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Certificate and key files the peer made.
struct PeerFiles {
    cert: String,
    key: String,
}

async fn peer_gen(python: &Path, args: &[&str]) -> PeerFiles {
    let (json, code) = run_peer(python, &strings(args)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((json["ok"].as_bool(), code), (Some(true), Some(0)), "{json}");
    PeerFiles {
        cert: json["cert"].as_str().expect("cert").to_owned(),
        key: json["key"].as_str().expect("key").to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// a. Python asyncua client -> our server
// ---------------------------------------------------------------------------------------------------------------

/// What one operation of a cell must answer.
fn expected_status(token: &str, op: &str) -> &'static str {
    match (token, op) {
        ("anonymous", "write" | "call") => "BadUserAccessDenied",
        _ => "Good",
    }
}

/// Judges one `client-session` answer: every operation with the status the token must get, and the values.
fn judge_python_cell(token: &str, json: &Value, code: Option<i32>) -> Result<String, String> {
    let results =
        json["results"].as_array().ok_or_else(|| format!("no session: {} {}", json["status"], json["error"]))?;
    if json["session"]["user"] != token {
        return Err(format!("the session ran as {}", json["session"]["user"]));
    }
    let ops: Vec<&str> = results.iter().filter_map(|r| r["op"].as_str()).collect();
    if ops != ["read", "read", "write", "browse", "call", "subscribe"] {
        return Err(format!("operations {ops:?}: {json}"));
    }
    let mut detail = Vec::new();
    for r in results {
        let op = r["op"].as_str().unwrap_or_default();
        let want = expected_status(token, op);
        if r["status"] != want {
            return Err(format!("{op} {}: {} (expected {want})", r["node"], r["status"]));
        }
        if want != "Good" {
            detail.push(format!("{op} {want} (expected)"));
            continue;
        }
        match op {
            "read" if r["node"].as_str().is_some_and(|n| n.ends_with("s=Blob")) => {
                if r["value"]["len"] != 1024 || r["type"] != "ByteString" {
                    return Err(format!("Blob read {r}"));
                }
                detail.push("Blob 1024 B".into());
            }
            "read" if r["type"] != "Double" => return Err(format!("Setpoint read {r}")),
            "read" => detail.push(format!("read {}", r["value"])),
            "write" => detail.push("write".into()),
            "browse" => {
                let mut names: Vec<&str> = r["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["display_name"].as_str())
                    .collect();
                names.sort_unstable();
                if names != ["Add", "Blob", "Counter", "Setpoint"] {
                    return Err(format!("browse Machine found {names:?}"));
                }
                detail.push("browse 4".into());
            }
            "call" => {
                if r["outputs"] != serde_json::json!([3.25]) {
                    return Err(format!("Add(1.25, 2) = {}", r["outputs"]));
                }
                detail.push("Add=3.25".into());
            }
            "subscribe" => {
                let changes: Vec<i64> =
                    r["changes"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
                if changes.len() < 3 || changes.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(format!("Counter changes {}", r["changes"]));
                }
                detail.push(format!("changes {changes:?}"));
            }
            _ => return Err(format!("unexpected operation {r}")),
        }
    }
    // The tool's own verdict must agree with ours (anonymous runs with --expect-failure BadUserAccessDenied).
    let tool_ok = match token {
        "anonymous" => json["expectation_met"] == true,
        _ => json["ok"] == true,
    };
    if !tool_ok || code != Some(0) {
        return Err(format!("ua_peer.py exit {code:?}: {json}"));
    }
    Ok(detail.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_sessions_against_our_server_interop() {
    init_tracing();
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 temp dir").to_owned();
    let app = peer_gen(&python, &["gen-cert", "--out", &out, "--app-uri", PEER_CLIENT_URI, "--name", "client"]).await;
    let user = peer_gen(&python, &["gen-user-cert", "--out", &out, "--name", PEER_CERT_USER]).await;

    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let server = MachineServer::start(&vaultd, 1024, |b| b).await;
    server.pki.trust(&std::fs::read(&app.cert).expect("peer certificate")).expect("trust the peer");
    server.user_pki.trust(&std::fs::read(&user.cert).expect("user certificate")).expect("trust the peer's user");
    let server_cert = dir.path().join("server.der");
    std::fs::write(&server_cert, &server.certificate).expect("server certificate");
    let node = |id: &NodeId| id.to_string();
    let (setpoint, counter, blob) =
        (node(&server.nodes.setpoint), node(&server.nodes.counter), node(&server.nodes.blob));
    let (machine, add) = (node(&server.nodes.machine), node(&server.nodes.add));

    let base = |policy: SecurityPolicy, mode: SecurityMode| -> Vec<String> {
        let mut args = strings(&["client-session", "--url", server.endpoint_url(), "--policy", policy.name()]);
        args.extend(strings(&["--mode", mode_name(mode), "--timeout", "20", "--deadline", "50"]));
        if !policy.is_none() {
            args.extend(strings(&["--cert", &app.cert, "--key", &app.key, "--app-uri", PEER_CLIENT_URI]));
            args.extend(strings(&["--server-cert", server_cert.to_str().expect("utf-8")]));
        }
        args
    };
    let mut cells = Vec::new();
    for (i, (policy, mode)) in matrix_cases().into_iter().enumerate() {
        for (token, identity) in [
            ("anonymous", strings(&["--user", "anonymous", "--expect-failure", "BadUserAccessDenied"])),
            ("username", strings(&["--user", &format!("{OPERATOR}:{OPERATOR_PASSWORD}")])),
            ("x509", strings(&["--user-cert", &user.cert, "--user-key", &user.key])),
        ] {
            let mut args = base(policy, mode);
            args.extend(identity);
            args.extend(strings(&["--read", &setpoint, "--read", &blob]));
            args.extend(strings(&["--write", &format!("{setpoint}={}.5:Double", i + 10)]));
            args.extend(strings(&["--browse", &machine, "--call", &format!("{machine}:{add}:1.25:Double,2:Double")]));
            args.extend(strings(&["--subscribe", &counter, "--changes", "3", "--publish-interval", "100"]));
            cells.push((policy, mode, token, args));
        }
    }
    let started = std::time::Instant::now();
    let python_ref = &python;
    let outcomes: Vec<_> =
        futures_util::stream::iter(cells.into_iter().map(|(policy, mode, token, args)| async move {
            let outcome = match run_peer(python_ref, &args).await {
                Ok((json, code)) => judge_python_cell(token, &json, code),
                Err(e) => Err(e),
            };
            (policy, mode, token, outcome)
        }))
        .buffered(PYTHON_CLIENTS_AT_ONCE)
        .collect()
        .await;
    let mut matrix = Matrix::default();
    for (policy, mode, token, outcome) in outcomes {
        matrix.record(policy, mode, &format!("asyncua -> certvault, {token}"), outcome);
    }

    // A wrong password is refused at ActivateSession, with the password encrypted (Sign endpoint: the endpoint's
    // policy encrypts it) or over None (our None endpoint's token policy names a secured policy).
    for (policy, mode) in [
        (SecurityPolicy::None, SecurityMode::None),
        (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
        (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
    ] {
        let mut args = base(policy, mode);
        args.extend(strings(&["--user", &format!("{OPERATOR}:wrong"), "--expect-failure", "BadUserAccessDenied"]));
        let outcome = match run_peer(&python, &args).await {
            Ok((json, Some(0))) if json["expectation_met"] == true && json.get("session").is_none() => {
                Ok(format!("refused at activation: {}", json["status"]))
            }
            Ok((json, code)) => Err(format!("exit {code:?}: {json}")),
            Err(e) => Err(e),
        };
        matrix.record(policy, mode, "asyncua -> certvault, wrong password", outcome);
    }
    matrix.print(&format!(
        "Python asyncua 2.1.0 client -> certvault server (keys in vaultd): sessions and services ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
}

// ---------------------------------------------------------------------------------------------------------------
// b. our client -> Python asyncua server
// ---------------------------------------------------------------------------------------------------------------

/// The asyncua server process: stops when its stdin closes; killed and reaped on drop anyway.
struct PythonServer {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Value,
    stderr: PathBuf,
}

impl PythonServer {
    /// Starts it and waits for its ready line.
    fn start(python: &Path, args: &[String], stderr: PathBuf) -> PythonServer {
        let mut child = Command::new(python)
            .arg(peer_script())
            .arg("server")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn ua_peer.py server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut server = PythonServer { child, stdin, ready: Value::Null, stderr };
        // The line comes once asyncua listens (a few seconds) or the process ends (EOF): no timer needed, and the
        // process ends by itself after --max-seconds.
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        server.ready = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
        assert!(
            read.is_ok() && server.ready["ready"] == true,
            "the asyncua server did not start: {line}\nstderr: {}",
            std::fs::read_to_string(&server.stderr).unwrap_or_default()
        );
        server
    }

    fn url(&self) -> String {
        self.ready["url"].as_str().expect("url").to_owned()
    }

    fn node(&self, name: &str) -> NodeId {
        let ns = self.ready["test_namespace_index"].as_u64().and_then(|n| u16::try_from(n).ok()).expect("ns index");
        NodeId::new(ns, name)
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct OurSide {
    _vaultd: Vaultd,
    app: LocalIdentity,
    user_certificate: Vec<u8>,
    user_key: certvault::SharedKey,
    server_certificate: Vec<u8>,
}

impl OurSide {
    fn options(&self, policy: SecurityPolicy, mode: SecurityMode, user: UserIdentity) -> SessionOptions {
        let mut channel = ClientOptions::new(policy, mode);
        channel.timeout = Duration::from_secs(20);
        if !policy.is_none() {
            channel.identity = Some(self.app.clone());
            channel.server_certificate = Some(self.server_certificate.clone());
        }
        let mut options = SessionOptions::new(channel);
        options.identity = user;
        options.application_uri = Some(OUR_CLIENT_URI.into());
        options
    }

    fn users(&self) -> Vec<(&'static str, UserIdentity)> {
        vec![
            ("anonymous", UserIdentity::Anonymous),
            ("username", UserIdentity::user_name(OPERATOR, PEER_PASSWORD)),
            ("x509", UserIdentity::x509(self.user_certificate.clone(), self.user_key.clone())),
        ]
    }
}

/// One session against the asyncua server: read, write + read back (under `setpoint`, as cells run at once),
/// browse, call, three data changes, close.
async fn exercise(
    server: &PythonServer,
    options: SessionOptions,
    seed: f64,
    setpoint: &tokio::sync::Mutex<()>,
) -> Result<String, String> {
    let e = |what: &'static str| move |err: certvault_opcua::Error| format!("{what}: {err} ({})", err.status_code());
    let session = Session::connect(&server.url(), options).await.map_err(e("connect"))?;
    let first = session.read_value(&server.node("Setpoint")).await.map_err(e("read"))?;
    if !matches!(first, Variant::Double(_)) {
        return Err(format!("Setpoint is {first:?}"));
    }
    {
        let _guard = setpoint.lock().await;
        session.write_value(&server.node("Setpoint"), seed).await.map_err(e("write"))?;
        let back = session.read_value(&server.node("Setpoint")).await.map_err(e("read back"))?;
        if back != Variant::Double(seed) {
            return Err(format!("read back {back:?}, wrote {seed}"));
        }
    }
    let children = session.browse_children(&server.node("Machine")).await.map_err(e("browse"))?;
    let mut names: Vec<String> = children.iter().map(|r| r.browse_name.name.as_ref().to_owned()).collect();
    names.sort();
    if names != ["Add", "Blob", "Counter", "Setpoint"] {
        return Err(format!("browse found {names:?}"));
    }
    let sum = session
        .call_method(
            &server.node("Machine"),
            &server.node("Machine.Add"),
            vec![Variant::Double(1.25), Variant::Double(2.0)],
        )
        .await
        .map_err(e("call"))?;
    if sum != [Variant::Double(3.25)] {
        return Err(format!("Add(1.25, 2) = {sum:?}"));
    }
    let params = SubscriptionParams {
        publishing_interval: Duration::from_millis(100),
        max_keep_alive_count: 10,
        lifetime_count: 300,
        ..Default::default()
    };
    let mut stream = session
        .subscribe(params, vec![MonitoredItemSpec::value(server.node("Counter"))])
        .await
        .map_err(e("subscribe"))?;
    let changes = next_changes(&mut stream, 3, Duration::from_secs(15)).await?;
    let values: Vec<i64> = changes
        .iter()
        .filter_map(|c| match c.value.value {
            Some(Variant::Int64(v)) => Some(v),
            _ => None,
        })
        .collect();
    if values.len() != 3 || values.windows(2).any(|w| w[1] <= w[0]) {
        return Err(format!("Counter changes {changes:?}"));
    }
    drop(stream);
    session.close().await.map_err(e("close"))?;
    Ok(format!("read/write/browse/call ok, changes {values:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_sessions_against_python_server_interop() {
    init_tracing();
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let app = identity(vaultd.generate_rsa("opcua-client", 2048), "client", OUR_CLIENT_URI);
    let user_key = vaultd.generate_rsa("opcua-user", 2048);
    let user_certificate = self_signed(&user_key, "x509-user", "urn:certvault:test:user");
    let trust = dir.path().join("trust");
    std::fs::create_dir(&trust).expect("trust dir");
    std::fs::write(trust.join("client.der"), app.certificate()).expect("trust our client");
    let user_file = dir.path().join("user.der");
    std::fs::write(&user_file, &user_certificate).expect("user certificate");

    let path = |p: &Path| p.to_str().expect("utf-8 temp dir").to_owned();
    let mut args = strings(&["--port", "0", "--policy", "None"]);
    for policy in
        [SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes128Sha256RsaOaep, SecurityPolicy::Aes256Sha256RsaPss]
    {
        args.extend(strings(&["--policy", policy.name()]));
    }
    args.extend(strings(&["--mode", "Sign", "--mode", "SignAndEncrypt", "--generate-cert", &path(dir.path())]));
    args.extend(strings(&["--trust", &path(&trust), "--user", &format!("{OPERATOR}:{PEER_PASSWORD}")]));
    args.extend(strings(&["--trust-user-cert", &path(&user_file), "--blob-size", "1024", "--max-seconds", "300"]));
    let stderr = dir.path().join("server.stderr");
    let server = tokio::task::spawn_blocking(move || PythonServer::start(&python, &args, stderr))
        .await
        .expect("start the asyncua server");
    let server_certificate = std::fs::read(server.ready["cert"].as_str().expect("cert")).expect("server certificate");
    let ours = OurSide { _vaultd: vaultd, app, user_certificate, user_key, server_certificate };

    let mut cells = Vec::new();
    for (policy, mode) in matrix_cases() {
        for (token, user) in ours.users() {
            cells.push((policy, mode, token, ours.options(policy, mode, user)));
        }
    }
    let started = std::time::Instant::now();
    let lock = tokio::sync::Mutex::new(());
    let (server_ref, lock_ref) = (&server, &lock);
    let outcomes: Vec<_> = futures_util::stream::iter(cells.into_iter().enumerate().map(
        |(i, (policy, mode, token, options))| async move {
            let seed = 10.5 + i as f64;
            let outcome = match tokio::time::timeout(CELL_TIMEOUT, exercise(server_ref, options, seed, lock_ref)).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err("timed out".into()),
            };
            (policy, mode, token, outcome)
        },
    ))
    .buffered(OUR_SESSIONS_AT_ONCE)
    .collect()
    .await;
    let mut matrix = Matrix::default();
    for (policy, mode, token, outcome) in outcomes {
        matrix.record(policy, mode, &format!("certvault -> asyncua, {token}"), outcome);
    }

    // A wrong password: asyncua 2.1.0 answers ActivateSession with BadUserAccessDenied (tests/python/README.md).
    for (policy, mode) in [
        (SecurityPolicy::None, SecurityMode::None),
        (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
        (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
    ] {
        let options = ours.options(policy, mode, UserIdentity::user_name(OPERATOR, "wrong"));
        let outcome = match tokio::time::timeout(CELL_TIMEOUT, Session::connect(&server.url(), options)).await {
            Err(_) => Err("timed out".to_owned()),
            Ok(Ok(session)) => {
                let _ = session.close().await;
                Err("a wrong password was accepted".to_owned())
            }
            Ok(Err(e)) if e.status_code() == StatusCode::BadUserAccessDenied => {
                Ok(format!("refused: {}", e.status_code()))
            }
            Ok(Err(e)) => Err(format!("unexpected {e} ({})", e.status_code())),
        };
        matrix.record(policy, mode, "certvault -> asyncua, wrong password", outcome);
    }
    matrix.print(&format!(
        "certvault client (app + user keys in vaultd) -> Python asyncua 2.1.0 server: sessions and services ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    let failures = matrix.failures();
    assert!(
        failures.is_empty(),
        "failed cases: {failures:#?}\nasyncua server stderr: {}",
        std::fs::read_to_string(&server.stderr).unwrap_or_default()
    );
}
