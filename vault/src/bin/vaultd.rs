//! `vaultd`: serves emulated hardware dongles (sealed container files) over a Unix socket.
//!
//! The keys are decrypted only inside this process, only after a client logged in with the PIN, and there is no
//! operation that sends one out. See `docs/vaultd.md`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use certvault::daemon::server::{default_socket, Daemon, DaemonConfig};
use clap::Parser;

/// Serve certvault containers (emulated dongles) over a Unix socket.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// A container file to serve (repeat for several; made with `certvault init`).
    #[arg(long = "container", value_name = "FILE", required_unless_present = "tokens")]
    containers: Vec<PathBuf>,
    /// A PKCS#11 token to front, as a `pkcs11:` URI naming the token and `module-path` (repeat for several).
    /// Clients then reach it through this daemon, so the token session lives here, not in the application.
    #[arg(long = "pkcs11", value_name = "URI")]
    tokens: Vec<certvault::uri::Pkcs11Uri>,
    /// Directory for the audit logs and PIN counters of fronted tokens.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Unix socket to listen on.
    #[arg(long, env = "CERTVAULT_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Octal mode of the socket file: who may connect at all (keys can further be limited to uids).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Connections served at once.
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("not an octal mode: {e}"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CERTVAULT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = DaemonConfig::new(args.socket.unwrap_or_else(default_socket), args.containers);
    config.socket_mode = args.socket_mode;
    config.max_connections = args.max_connections;
    config.tokens = args.tokens;
    config.state_dir = args.state_dir;
    if let Some(dir) = config.socket.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating socket directory {}", dir.display()))?;
        }
    }
    let daemon = Daemon::bind(&config)?;
    daemon.serve()?;
    Ok(())
}
