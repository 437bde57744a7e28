//! Starting `vaultd` as a child process and waiting until it serves: for demos, tests, benchmarks and
//! applications that bring their own daemon.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, VaultError};

/// Starts `exe` with `args` plus `--socket socket` and returns once the socket accepts connections. If the daemon
/// exits first, the error carries what it printed; if it does not listen within `timeout`, it is killed. After
/// start-up its log is forwarded to this process's stderr, so a chatty daemon never blocks on a full pipe.
pub fn start_vaultd(exe: &Path, args: &[&OsStr], socket: &Path, timeout: Duration) -> Result<Child> {
    let mut child = Command::new(exe)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env("CERTVAULT_LOG", std::env::var("CERTVAULT_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| VaultError::io(format!("starting {}", exe.display()), e))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut said = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut said);
            }
            return Err(VaultError::Daemon(format!("vaultd exited with {status}: {}", said.trim())));
        }
        if UnixStream::connect(socket).is_ok() {
            if let Some(mut err) = child.stderr.take() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = err.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        eprint!("{}", String::from_utf8_lossy(&buf[..n]));
                    }
                });
            }
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(VaultError::Daemon(format!(
                "vaultd did not listen on {} within {timeout:?}",
                socket.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
