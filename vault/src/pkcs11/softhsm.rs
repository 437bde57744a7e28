//! Throw-away SoftHSM2 token directories, for tests, demos and benchmarks.
//!
//! SoftHSM2 is a simulation (its token files are encrypted under the PIN), not a security boundary: use it where a
//! real PKCS#11 module is not at hand. The module reads `SOFTHSM2_CONF` when it is first initialized in a process,
//! so set that variable to [`write_config`]'s result before opening any token.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, VaultError};

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Whether the module and `softhsm2-util` are installed.
pub fn available() -> bool {
    Path::new(MODULE).exists() && Command::new("softhsm2-util").arg("--version").output().is_ok()
}

/// Writes `dir/softhsm2.conf` keeping tokens in `dir/tokens`, and returns the config's path.
pub fn write_config(dir: &Path) -> Result<PathBuf> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| VaultError::io(format!("creating {}", tokens.display()), e))?;
    let conf = dir.join("softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n\
         slots.mechanisms = ALL\nlibrary.reset_on_fork = false\n",
        tokens.display()
    );
    std::fs::write(&conf, text).map_err(|e| VaultError::io(format!("writing {}", conf.display()), e))?;
    Ok(conf)
}

/// Initializes a token labelled `label` in the directory of config `conf`, with `softhsm2-util`.
pub fn init_token(conf: &Path, label: &str, pin: &str, so_pin: &str) -> Result<()> {
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .map_err(|e| VaultError::io("running softhsm2-util (install softhsm2)", e))?;
    if !out.status.success() {
        return Err(VaultError::Pkcs11(format!(
            "softhsm2-util --init-token {label}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
