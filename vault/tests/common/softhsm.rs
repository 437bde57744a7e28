//! A SoftHSM2 token directory per test binary, with one token per test (PKCS#11 initialisation and
//! `SOFTHSM2_CONF` are per process, and tests run as threads of one process).
//!
//! Without SoftHSM2 the tests skip with a message, unless `CERTVAULT_REQUIRE_SOFTHSM` is set (CI), where they fail.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use certvault::pkcs11::Pkcs11Token;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = certvault::pkcs11::softhsm::MODULE;
/// User PIN of every test token.
pub const PIN: &[u8] = b"123456";

/// Makes (once per process) a token directory holding one token per label in `tokens`. Returns `None` when
/// SoftHSM2 is missing and not required.
pub fn setup(tokens: &'static [&'static str]) -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if !certvault::pkcs11::softhsm::available() {
            if std::env::var_os("CERTVAULT_REQUIRE_SOFTHSM").is_some() {
                panic!("CERTVAULT_REQUIRE_SOFTHSM is set but SoftHSM2 ({MODULE}, softhsm2-util) is missing");
            }
            eprintln!("SKIPPED: SoftHSM2 is not installed ({MODULE}); install softhsm2 to run the PKCS#11 tests");
            return None;
        }
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(base);
        let dir = tempfile::Builder::new().prefix("softhsm-").tempdir_in(base).expect("temp dir").keep();
        let conf = certvault::pkcs11::softhsm::write_config(&dir).expect("softhsm2.conf");
        // Before any thread initializes the module, which reads it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in tokens {
            certvault::pkcs11::softhsm::init_token(&conf, label, "123456", "12345678").expect("init token");
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
