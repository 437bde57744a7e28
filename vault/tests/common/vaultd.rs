//! A real `vaultd` process per test: its own temporary directory, container and socket, killed on drop.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use certvault::container::{Container, KdfParams};
use certvault::DaemonClient;

/// The user PIN of test containers.
pub const PIN: &[u8] = b"123456";
/// The admin PIN of test containers.
pub const ADMIN_PIN: &[u8] = b"admin-pin-42";
/// Cheap Argon2id so tests stay fast; real containers use the default cost.
pub const TEST_KDF: KdfParams = KdfParams { m_kib: 256, t: 1, p: 1 };

/// A running vaultd serving one fresh container.
pub struct Vaultd {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The container file.
    pub container: PathBuf,
    /// The socket.
    pub socket: PathBuf,
    /// The container's serial.
    pub serial: String,
    child: Option<Child>,
}

impl Vaultd {
    /// Makes a container (max 3 PIN attempts) and starts a daemon on it.
    pub fn start(serial: &str) -> Vaultd {
        let dir = tempfile::tempdir().expect("tempdir");
        let container = dir.path().join("dongle.cvault");
        Container::create(&container, serial, PIN, ADMIN_PIN, TEST_KDF, 3).expect("create container");
        let socket = dir.path().join("vaultd.sock");
        let mut v = Vaultd { dir, container, socket, serial: serial.to_string(), child: None };
        v.restart().expect("start vaultd");
        v
    }

    /// (Re)starts the daemon on the same container and socket. Returns the daemon's stderr if it exits instead.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let child = spawn(&self.container, &self.socket)?;
        self.child = Some(child);
        Ok(())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the daemon (no clean-up on its side, like a power cut).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client, logged in.
    pub fn client(&self) -> DaemonClient {
        let c = DaemonClient::connect(&self.socket, None).expect("connect");
        c.login(PIN).expect("login");
        c
    }
}

impl Drop for Vaultd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `vaultd` on `container` and waits until the socket answers. On failure, returns what vaultd printed.
pub fn spawn(container: &Path, socket: &Path) -> Result<Child, String> {
    spawn_with(&["--container".as_ref(), container.as_os_str()], socket)
}

/// Starts `vaultd` with `args` plus `--socket socket` and waits until the socket answers.
pub fn spawn_with(args: &[&std::ffi::OsStr], socket: &Path) -> Result<Child, String> {
    certvault::daemon::launch::start_vaultd(
        Path::new(env!("CARGO_BIN_EXE_vaultd")),
        args,
        socket,
        Duration::from_secs(20),
    )
    .map_err(|e| e.to_string())
}
