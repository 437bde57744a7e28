//! A SoftHSM2 token directory per test binary, with one token per test (PKCS#11 initialisation and
//! `SOFTHSM2_CONF` are per process, and tests run as threads of one process).
//!
//! Without SoftHSM2 the tests skip with a message, unless `CERTVAULT_REQUIRE_SOFTHSM` is set (CI), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use certvault::pkcs11::Pkcs11Token;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// User PIN of every test token.
pub const PIN: &[u8] = b"123456";

/// Makes (once per process) a token directory holding one token per label in `tokens`. Returns `None` when
/// SoftHSM2 is missing and not required.
pub fn setup(tokens: &'static [&'static str]) -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let have_util = Command::new("softhsm2-util").arg("--version").output().is_ok();
        if !Path::new(MODULE).exists() || !have_util {
            if std::env::var_os("CERTVAULT_REQUIRE_SOFTHSM").is_some() {
                panic!("CERTVAULT_REQUIRE_SOFTHSM is set but SoftHSM2 ({MODULE}, softhsm2-util) is missing");
            }
            eprintln!("SKIPPED: SoftHSM2 is not installed ({MODULE}); install softhsm2 to run the PKCS#11 tests");
            return None;
        }
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(base);
        let dir = tempfile::Builder::new().prefix("softhsm-").tempdir_in(base).expect("temp dir").keep();
        let token_dir = dir.join("tokens");
        std::fs::create_dir(&token_dir).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n\
                 slots.mechanisms = ALL\nlibrary.reset_on_fork = false\n",
                token_dir.display()
            ),
        )
        .unwrap();
        // Before any thread initializes the module, which reads it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in tokens {
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label, "--pin", "123456", "--so-pin", "12345678"])
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util");
            assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        }
        Some(dir)
    })
    .as_deref()
}

/// Token directories of earlier runs (the static above is never dropped) go when they are an hour old.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old && e.file_name().to_string_lossy().starts_with("softhsm-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Opens the token `label` (one of `tokens`), logged in.
pub fn token(tokens: &'static [&'static str], label: &str) -> Option<Pkcs11Token> {
    assert!(tokens.contains(&label), "add {label:?} to the token list");
    setup(tokens)?;
    Some(Pkcs11Token::open(Path::new(MODULE), label, Some(PIN)).unwrap())
}
