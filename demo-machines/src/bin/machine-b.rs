//! machine-b: the operator client of the filling line. Connects to machine-a with the strongest policy both sides
//! have and SignAndEncrypt only, authenticates as an operator (an X.509 user certificate whose key is in B's vault,
//! or a user name), subscribes to the process values and prints them live (stderr), calls Start, writes the speed
//! setpoint, and at the end prints a JSON report on stdout. Exit code 0 only if every step succeeded, 1 if one
//! failed, 2 if the configuration is unusable.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use certvault::SharedKey;
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{
    ClientOptions, EndpointFilter, MonitoredItemSpec, Session, SessionOptions, SubscriptionParams, UserIdentity,
};
use certvault_opcua::pki::PkiStore;
use clap::Parser;
use demo_machines::client_config::{parse_duration, ClientConfig, UserChoice};
use demo_machines::namespace::{LineNodes, NAMESPACE_URI};
use demo_machines::records::{printable_key_uri, Report, Step};
use futures_util::StreamExt;
use opcua_types::{StatusCode, VariableId, Variant};

/// The operator client of the filling line, its keys in a vault.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// machine-b's configuration file (TOML: [client], [identity], [security], [user], [run]).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How long to watch the values (overrides [run] duration), e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The speed setpoint to write, bottles/min (overrides [run] setpoint).
    #[arg(long)]
    setpoint: Option<f64>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MACHINE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = match ClientConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("machine-b: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(s) = args.setpoint.filter(|s| !s.is_finite()) {
        eprintln!("machine-b: --setpoint {s} is not a number");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("machine-b: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(&config, &args));
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("machine-b: writing the report: {e}"),
    }
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// A step's outcome: Good, or a status code and why.
type Outcome = Result<(), (StatusCode, String)>;

fn of<T>(result: &Result<T, certvault_opcua::Error>) -> Outcome {
    result.as_ref().map(|_| ()).map_err(|e| (e.status_code(), e.to_string()))
}

struct Recorder {
    report: Report,
}

impl Recorder {
    fn step(&mut self, step: &str, outcome: Outcome, detail: Option<String>) {
        let (status, detail) = match outcome {
            Ok(()) => ("Good".to_owned(), detail),
            Err((status, why)) => (status.to_string(), Some(why)),
        };
        eprintln!("machine-b: {step}: {status}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default());
        self.report.steps.push(Step { step: step.into(), status, detail });
    }

    fn fail(&mut self, step: &str, error: &anyhow::Error) {
        eprintln!("machine-b: {step}: failed: {error:#}");
        self.report.steps.push(Step { step: step.into(), status: "Failed".into(), detail: Some(format!("{error:#}")) });
    }
}

async fn run(config: &ClientConfig, args: &Args) -> Report {
    let mut rec = Recorder {
        report: Report {
            server_url: config.client.server_url.clone(),
            own_key: printable_key_uri(&config.identity.key),
            ..Report::default()
        },
    };
    if let Err(e) = session_steps(config, args, &mut rec).await {
        rec.fail("setup", &e);
    }
    rec.report.ok = !rec.report.steps.is_empty() && rec.report.steps.iter().all(Step::ok);
    rec.report
}

fn open_key(uri: &str) -> Result<SharedKey> {
    let parsed: certvault::uri::KeyUri = uri.parse().with_context(|| format!("key URI {}", printable_key_uri(uri)))?;
    certvault::store::open_key(&parsed).with_context(|| format!("opening vault key {}", printable_key_uri(uri)))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Everything before the session: keys from the vaults, certificates, trust store, the user.
fn prepare(config: &ClientConfig) -> Result<(LocalIdentity, UserIdentity, String, Arc<PkiStore>)> {
    let key = open_key(&config.identity.key)?;
    let chain = read(&config.resolve(&config.identity.certificate))?;
    let identity = LocalIdentity::new(key, chain).context("[identity] certificate and key do not belong together")?;
    let pki_path = config.resolve(&config.security.pki);
    let pki =
        Arc::new(PkiStore::create_or_open(&pki_path).with_context(|| format!("trust store {}", pki_path.display()))?);
    let (user, described) = match config.user()? {
        UserChoice::Certificate { certificate, key } => {
            let cert = read(&certificate)?;
            let leaf = demo_machines::certs::leaf(&cert)?;
            let user_key = open_key(&key)?;
            if leaf.spki() != user_key.info().spki_der.as_slice() {
                anyhow::bail!("[user] certificate {} does not carry the key {}", certificate.display(), key);
            }
            let described = format!(
                "X.509 {} ({}), key {}",
                leaf.common_name().unwrap_or(leaf.subject()),
                demo_machines::records::hex(&leaf.thumbprint()),
                printable_key_uri(&key)
            );
            (UserIdentity::x509(leaf.der().to_vec(), user_key), described)
        }
        UserChoice::UserName { name, password_file } => {
            let text = std::fs::read_to_string(&password_file)
                .with_context(|| format!("reading the password file {}", password_file.display()))?;
            let password = text.trim_end_matches(['\r', '\n']).to_owned();
            (UserIdentity::user_name(name.clone(), password), format!("user {name}"))
        }
    };
    Ok((identity, user, described, pki))
}

async fn session_steps(config: &ClientConfig, args: &Args, rec: &mut Recorder) -> Result<()> {
    let duration = match args.duration {
        Some(d) => d,
        None => config.duration()?,
    };
    let setpoint = args.setpoint.unwrap_or(config.run.setpoint);
    let prepared = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || prepare(&config)).await.context("opening the vault keys")??
    };
    let (identity, user, described, pki) = prepared;
    rec.report.own_certificate_thumbprint = Some(demo_machines::records::hex(identity.thumbprint()));
    rec.report.user = described;

    // Discovery over an unsecured channel (as OPC UA does); the session uses the strongest secured endpoint both
    // sides have, SignAndEncrypt only, and our trust store judges machine-a's certificate.
    let mut channel = ClientOptions::new(SecurityPolicy::None, SecurityMode::None);
    channel.identity = Some(identity);
    channel.pki = Some(pki);
    channel.application_uri = Some(config.client.application_uri.clone());
    let mut options = SessionOptions::new(channel);
    options.discovery = Some(EndpointFilter {
        policies: config.policies()?,
        min_mode: SecurityMode::SignAndEncrypt,
        ..EndpointFilter::secure()
    });
    options.identity = user;
    options.application_uri = Some(config.client.application_uri.clone());
    options.application_name = config.client.application_name.clone();
    options.session_name = "machine-b operator".into();
    let connected = Session::connect(&config.client.server_url, options).await;
    let detail = connected.as_ref().ok().map(|s| format!("{} / SignAndEncrypt", s.security_policy().name()));
    rec.step("connect", of(&connected), detail);
    let session = connected?;
    let endpoint = session.endpoint().clone();
    rec.report.policy = Some(session.security_policy().name().to_owned());
    rec.report.mode = SecurityMode::from_wire(endpoint.security_mode).ok().map(|m| format!("{m:?}"));
    rec.report.server_certificate_thumbprint =
        endpoint.server_certificate.value.as_deref().and_then(|c| demo_machines::certs::thumbprint(c).ok());

    let interval = Duration::from_millis(config.run.publishing_interval_ms);
    let result = operate(&session, duration, setpoint, interval, rec).await;
    let closed = session.close().await;
    rec.step("close session", of(&closed), None);
    result
}

async fn operate(
    session: &Session,
    duration: Duration,
    setpoint: f64,
    publishing_interval: Duration,
    rec: &mut Recorder,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + duration;
    // The namespace index by its URI, from the server's NamespaceArray.
    let namespaces = session.read_value(&VariableId::Server_NamespaceArray.into()).await;
    let ns = match &namespaces {
        Ok(Variant::Array(array)) => {
            array.values.iter().position(|v| matches!(v, Variant::String(s) if s.as_ref() == NAMESPACE_URI))
        }
        _ => None,
    };
    let found: Result<u16, (StatusCode, String)> = match (&namespaces, ns) {
        (Err(e), _) => Err((e.status_code(), e.to_string())),
        (Ok(_), Some(i)) => u16::try_from(i).map_err(|_| (StatusCode::BadNoMatch, "namespace index too large".into())),
        (Ok(_), None) => Err((StatusCode::BadNoMatch, format!("the server has no namespace {NAMESPACE_URI}"))),
    };
    rec.step(
        "find namespace",
        found.as_ref().map(|_| ()).map_err(Clone::clone),
        found.as_ref().ok().map(|i| format!("{NAMESPACE_URI} is ns={i}")),
    );
    let Ok(ns) = found else { anyhow::bail!("machine-a does not serve the filling line") };
    let nodes = LineNodes::in_namespace(ns);
    let names: Vec<(&'static str, opcua_types::NodeId)> = nodes.values();

    let params = SubscriptionParams { publishing_interval, ..SubscriptionParams::default() };
    let items = names.iter().map(|(_, id)| MonitoredItemSpec::value(id.clone())).collect();
    let subscribed = session.subscribe(params, items).await;
    rec.step("subscribe", of(&subscribed), Some(format!("{} process values", names.len())));
    let mut changes = subscribed.context("subscribing")?;

    let started = session.call_method(&nodes.line, &nodes.start, Vec::new()).await;
    rec.step("call Start", of(&started), None);
    let written = session.write_value(&nodes.speed_setpoint, setpoint).await;
    rec.step("write SpeedSetpoint", of(&written), Some(format!("{setpoint} bottles/min")));

    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else {
                    let lost = Err((StatusCode::BadNoSubscription, "the subscription ended early".into()));
                    rec.step("watch", lost, None);
                    break;
                };
                let name = names.iter().find(|(_, id)| *id == change.node_id).map_or("?", |(n, _)| *n);
                let value = change.value.value.as_ref().map(json_value).unwrap_or(serde_json::Value::Null);
                eprintln!("machine-b: {name:>13} = {value}");
                rec.report.values.entry(name.to_owned()).or_default().add(value);
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    // The values at the end, read (not subscribed): the setpoint must be what we wrote.
    let read = session.read_value(&nodes.speed_setpoint).await;
    let detail = read.as_ref().ok().map(|v| format!("{}", json_value(v)));
    let checked = match read {
        Ok(Variant::Double(v)) if v == setpoint => Ok(()),
        Ok(other) => Err((StatusCode::BadUnexpectedError, format!("reads {other:?}, wrote {setpoint}"))),
        Err(e) => Err((e.status_code(), e.to_string())),
    };
    rec.step("read back SpeedSetpoint", checked, detail);
    Ok(())
}

fn json_value(v: &Variant) -> serde_json::Value {
    match v {
        Variant::Double(x) => (*x).into(),
        Variant::Float(x) => f64::from(*x).into(),
        Variant::UInt64(x) => (*x).into(),
        Variant::Int64(x) => (*x).into(),
        Variant::UInt32(x) => (*x).into(),
        Variant::Int32(x) => (*x).into(),
        Variant::Boolean(x) => (*x).into(),
        Variant::String(s) => s.as_ref().to_owned().into(),
        other => format!("{other:?}").into(),
    }
}
