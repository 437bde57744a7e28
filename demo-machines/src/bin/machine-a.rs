//! machine-a: the OPC UA server of a simulated filling line, configured by the server TOML file
//! (`certvault_opcua::server::config`; see `demo-machines/config/machine-a.toml`).
//!
//! stdout carries JSON records only, one per line: `{"event":"ready",...}` once the server listens, a `refused`
//! record for every refused client certificate, and `stopped` after SIGTERM/SIGINT. Logs go to stderr
//! (`MACHINE_LOG`, default `info`).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use certvault_opcua::server::config::ConfigFile;
use certvault_opcua::server::{AddressSpace, AddressSpaceLimits, ApplicationInfo, SharedAddressSpace, UserDatabase};
use clap::Parser;
use demo_machines::line::FillingLine;
use demo_machines::namespace::{self, SharedLine};
use demo_machines::records::{printable_key_uri, ServerEvent};
use opcua_types::DateTime;
use parking_lot::Mutex;
use tokio::signal::unix::{signal, SignalKind};

/// The OPC UA server of a simulated filling line, its key in a vault.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// The server configuration file (TOML: [server], [identity], [security], [users], [limits]).
    #[arg(long, value_name = "FILE", required_unless_present = "hash_password")]
    config: Option<PathBuf>,
    /// Read a password from stdin and print its Argon2id PHC hash for a users file, then exit.
    #[arg(long)]
    hash_password: bool,
    /// How often the simulation advances and publishes its values.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    tick_ms: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MACHINE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let result = if args.hash_password {
        hash_password()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(args)))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("machine-a: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn hash_password() -> Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on stdin (e.g. `machine-a --hash-password < password-file`)");
    }
    println!("{}", UserDatabase::hash_password(password)?);
    Ok(())
}

fn emit(event: &ServerEvent) {
    // stdout is for these records only; a closed stdout (the parent went away) is not a reason to stop serving.
    if let Ok(line) = serde_json::to_string(event) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

async fn run(args: Args) -> Result<()> {
    let path = args.config.context("--config is required")?;
    // Install the handlers first: a SIGTERM during start-up must not kill the process half-way.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let config = ConfigFile::load(&path)?;
    if config.security.allow_none {
        tracing::warn!("[security] allow_none = true: this server also accepts unsecured sessions");
    }
    let key = printable_key_uri(&config.identity.key);
    let info = ApplicationInfo {
        application_uri: config.server.application_uri.clone(),
        product_uri: config.server.product_uri.clone().unwrap_or_else(|| "urn:certvault".into()),
        application_name: config.server.application_name.clone().unwrap_or_else(|| "Machine A".into()),
    };
    // Opening the vault key and reading the trust stores block: off the runtime's workers.
    let builder = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || config.builder()).await.context("opening the configuration")??
    };
    let line: SharedLine = Arc::new(Mutex::new(FillingLine::default()));
    let mut space = AddressSpace::new(&info, AddressSpaceLimits::default(), DateTime::now());
    let nodes = namespace::build(&mut space, &line).context("building the filling line's namespace")?;
    let space = SharedAddressSpace::new(space);
    let server = builder.address_space(space.clone()).start().await.context("starting the server")?;

    let thumbprint = server
        .endpoints()
        .iter()
        .find_map(|e| e.server_certificate.value.as_deref().filter(|c| !c.is_empty()))
        .map(demo_machines::certs::thumbprint)
        .transpose()?
        .unwrap_or_default();
    let endpoints = server
        .endpoints()
        .iter()
        .map(|e| {
            let policy = e.security_policy_uri.as_ref().rsplit('#').next().unwrap_or_default().to_owned();
            format!("{policy}/{:?}", e.security_mode)
        })
        .collect();
    tracing::info!(url = server.endpoint_url(), "filling line serving");
    emit(&ServerEvent::Ready {
        endpoint_url: server.endpoint_url().to_owned(),
        certificate_thumbprint: thumbprint,
        key,
        endpoints,
    });

    if let Some(mut refusals) = server.certificate_refusals() {
        tokio::spawn(async move {
            loop {
                match refusals.recv().await {
                    Ok(r) => {
                        tracing::warn!(status = %r.status, "refused a client certificate: {}", r.reason);
                        emit(&ServerEvent::Refused {
                            status: r.status.to_string(),
                            wire_status: r.wire_status.to_string(),
                            policy: r.policy.name().to_owned(),
                            reason: r.reason,
                            copied_to_rejected: r.copied_to_rejected,
                        });
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("{n} certificate refusals not reported (too many at once)");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    let simulation = {
        let (line, space, nodes) = (line.clone(), space.clone(), nodes.clone());
        let tick = Duration::from_millis(args.tick_ms);
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(tick);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = Instant::now();
            loop {
                timer.tick().await;
                let now = Instant::now();
                let snapshot = {
                    let mut line = line.lock();
                    line.advance(now - last);
                    line.snapshot()
                };
                last = now;
                if let Err(e) = namespace::publish(&space, &nodes, &snapshot) {
                    tracing::error!("publishing the line's values: {e}");
                }
            }
        })
    };

    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{signal}: shutting down");
    simulation.abort();
    server.shutdown().await;
    emit(&ServerEvent::Stopped { signal: signal.into() });
    Ok(())
}
