//! The vault daemon for tests: the same `certvault::daemon::server::Daemon` that certvault's `vaultd` binary runs,
//! built as a binary of this package so integration tests find it with `env!("CARGO_BIN_EXE_tests-vaultd")` (Cargo builds
//! a package's own binaries before its integration tests, never those of a dependency). It runs in its own process,
//! so the OPC UA process holds only a socket to the key. Arguments: `--container FILE --socket PATH`.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use certvault::daemon::server::{Daemon, DaemonConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CERTVAULT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut containers = Vec::new();
    let mut socket = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--container") => containers.push(PathBuf::from(args.next().ok_or("--container needs a file")?)),
            Some("--socket") => socket = Some(PathBuf::from(args.next().ok_or("--socket needs a path")?)),
            _ => return Err(format!("unexpected argument {arg:?} (use --container FILE --socket PATH)").into()),
        }
    }
    let socket = socket.ok_or("--socket is required")?;
    let daemon = Daemon::bind(&DaemonConfig::new(socket, containers))?;
    daemon.serve()?;
    Ok(())
}
