//! The users a server knows: names with Argon2id password hashes, and user certificates mapped to roles.
//!
//! A users file is TOML:
//! ```toml
//! # Anonymous sessions get this role (default "anonymous": read and browse only).
//! anonymous_role = "anonymous"
//! # A trusted user certificate that matches no [[certificate]] entry gets this role.
//! certificate_default_role = "observer"
//!
//! [[user]]
//! name = "operator"
//! # PHC string; `machine-a --hash-password` (or UserDatabase::hash_password) makes one.
//! password = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! role = "operator"
//!
//! [[certificate]]
//! # Match a user certificate by SHA-1 thumbprint (hex) or by subject common name.
//! common_name = "Line 3 operator"
//! role = "operator"
//! ```
//! Password checks take the same time whether the user exists or not: an unknown name is checked against a dummy
//! hash with the same Argon2 cost as the users' hashes (the most common one when they differ; the default cost
//! with no users), so timing does not reveal which names exist. Both paths run exactly one Argon2 verification.

use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use super::access::{Principal, UserRole};

/// Why a users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file cannot be read.
    #[error("users file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("users file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A password entry that is not an Argon2 PHC string, or a duplicate user.
    #[error("users file: {0}")]
    Invalid(String),
    /// Hashing failed.
    #[error("password hashing: {0}")]
    Hash(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    anonymous_role: Option<UserRole>,
    #[serde(default)]
    certificate_default_role: Option<UserRole>,
    #[serde(default, rename = "user")]
    users: Vec<UserEntry>,
    #[serde(default, rename = "certificate")]
    certificates: Vec<CertificateEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: String,
    role: UserRole,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    #[serde(default)]
    thumbprint: Option<String>,
    #[serde(default)]
    common_name: Option<String>,
    role: UserRole,
}

#[derive(Clone)]
struct User {
    name: String,
    hash: String,
    role: UserRole,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not secret in the way a password is, but it has no business in logs either.
        f.debug_struct("User").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// The users and user certificates a server accepts.
#[derive(Clone, Debug)]
pub struct UserDatabase {
    users: Vec<User>,
    certificates: Vec<CertificateEntry>,
    anonymous_role: UserRole,
    certificate_default_role: UserRole,
    dummy_hash: String,
}

impl Default for UserDatabase {
    fn default() -> Self {
        UserDatabase::empty()
    }
}

impl UserDatabase {
    /// No users; anonymous callers read only; trusted user certificates are observers.
    pub fn empty() -> Self {
        UserDatabase {
            users: Vec::new(),
            certificates: Vec::new(),
            anonymous_role: UserRole::Anonymous,
            certificate_default_role: UserRole::Observer,
            // Fixed salt is fine here: this hash only burns the same time as a real check.
            dummy_hash:
                "$argon2id$v=19$m=19456,t=2,p=1$Y2VydHZhdWx0ZHVtbXk$aTqOa2rEwtZ0iimv3RrqwAzQIoS3eEw4N7G1Bq0WHe0".into(),
        }
    }

    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| UsersError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|e| match e {
            UsersError::Parse { message, .. } => UsersError::Parse { path: path.display().to_string(), message },
            other => other,
        })
    }

    /// Parses the TOML of a users file.
    pub fn parse(text: &str) -> Result<Self, UsersError> {
        let file: UsersFile =
            toml::from_str(text).map_err(|e| UsersError::Parse { path: "<text>".into(), message: e.to_string() })?;
        let mut db = UserDatabase::empty();
        if let Some(role) = file.anonymous_role {
            db.anonymous_role = role;
        }
        if let Some(role) = file.certificate_default_role {
            db.certificate_default_role = role;
        }
        for entry in file.users {
            PasswordHash::new(&entry.password)
                .map_err(|e| UsersError::Invalid(format!("user {:?}: password is not a PHC hash: {e}", entry.name)))?;
            db.add_hashed(entry.name, entry.password, entry.role)?;
        }
        for entry in &file.certificates {
            if entry.thumbprint.is_none() && entry.common_name.is_none() {
                return Err(UsersError::Invalid("a [[certificate]] needs a thumbprint or a common_name".into()));
            }
        }
        db.certificates = file.certificates;
        Ok(db)
    }

    /// Adds a user with an already hashed password (an Argon2 PHC string, which carries its cost).
    pub fn add_hashed(&mut self, name: String, hash: String, role: UserRole) -> Result<(), UsersError> {
        if name.is_empty() || self.users.iter().any(|u| u.name == name) {
            return Err(UsersError::Invalid(format!("user name {name:?} is empty or not unique")));
        }
        // A hash that does not parse would fail without any Argon2 work: a wrong password for this user would
        // answer faster than an unknown name.
        argon2_cost(&hash).map_err(|e| UsersError::Invalid(format!("user {name:?}: {e}")))?;
        self.users.push(User { name, hash, role });
        self.match_dummy_cost()
    }

    /// Makes the dummy hash of unknown names cost what the users' hashes cost (the most common cost when they
    /// differ), so an unknown name and a wrong password take the same time. A dummy made with the default cost
    /// while the users' hashes had another made unknown names measurably slower or faster (in the tests' users,
    /// ten times slower).
    fn match_dummy_cost(&mut self) -> Result<(), UsersError> {
        let mut costs: Vec<(ArgonCost, usize)> = Vec::new();
        for user in &self.users {
            let cost = argon2_cost(&user.hash).map_err(UsersError::Invalid)?;
            match costs.iter_mut().find(|(c, _)| *c == cost) {
                Some((_, n)) => *n += 1,
                None => costs.push((cost, 1)),
            }
        }
        // The first of the most common costs (max_by_key would take the last).
        let Some(&(wanted, _)) = costs.iter().rev().max_by_key(|(_, n)| *n) else { return Ok(()) };
        if costs.len() > 1 {
            tracing::warn!(
                costs = costs.len(),
                "user password hashes have different Argon2 costs: only users with the most common cost answer a \
                 wrong password as fast as an unknown name; rehash the others"
            );
        }
        if argon2_cost(&self.dummy_hash).ok() == Some(wanted) {
            return Ok(());
        }
        let params = argon2::Params::new(wanted.m, wanted.t, wanted.p, Some(wanted.output_len))
            .map_err(|e| UsersError::Hash(e.to_string()))?;
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        self.dummy_hash = argon
            .hash_password(b"certvault: no such user", &SaltString::generate(&mut OsRng))
            .map_err(|e| UsersError::Hash(e.to_string()))?
            .to_string();
        Ok(())
    }

    /// Adds a user, hashing `password` with the default Argon2id cost.
    pub fn add_user(&mut self, name: &str, password: &str, role: UserRole) -> Result<(), UsersError> {
        let hash = Self::hash_password(password)?;
        self.add_hashed(name.to_owned(), hash, role)
    }

    /// Maps a user certificate's subject common name to a role.
    pub fn map_certificate_common_name(&mut self, common_name: &str, role: UserRole) {
        self.certificates.push(CertificateEntry { thumbprint: None, common_name: Some(common_name.into()), role });
    }

    /// The role of anonymous sessions.
    pub fn set_anonymous_role(&mut self, role: UserRole) {
        self.anonymous_role = role;
    }

    /// An Argon2id PHC string for `password` (OWASP's default cost: 19 MiB, 2 passes).
    pub fn hash_password(password: &str) -> Result<String, UsersError> {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| UsersError::Hash(e.to_string()))
    }

    /// The principal of an anonymous session.
    pub fn anonymous(&self) -> Principal {
        Principal { name: "anonymous".into(), role: self.anonymous_role }
    }

    /// Checks a user name and password. Slow by design (Argon2id): call it on a blocking thread. Unknown users and
    /// wrong passwords fail alike and take the same time.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Option<Principal> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map(|u| u.hash.as_str()).unwrap_or(&self.dummy_hash);
        let ok = verify(hash, password);
        match user {
            Some(user) if ok => Some(Principal { name: user.name.clone(), role: user.role }),
            _ => None,
        }
    }

    /// The principal of a trusted user certificate: a [[certificate]] entry matching its thumbprint (hex) or common
    /// name, or the default certificate role.
    pub fn certificate_principal(&self, thumbprint: &[u8], subject: &str, common_name: Option<&str>) -> Principal {
        let hex_thumbprint = hex_lower(thumbprint);
        let role = self
            .certificates
            .iter()
            .find(|c| {
                c.thumbprint.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(&hex_thumbprint))
                    || (c.common_name.is_some() && c.common_name.as_deref() == common_name)
            })
            .map(|c| c.role)
            .unwrap_or(self.certificate_default_role);
        Principal { name: common_name.map(str::to_owned).unwrap_or_else(|| subject.to_owned()), role }
    }
}

/// The parameters that decide how long an Argon2 verification takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ArgonCost {
    m: u32,
    t: u32,
    p: u32,
    output_len: usize,
}

/// The cost of an Argon2 PHC string, or why it is not one.
fn argon2_cost(hash: &str) -> Result<ArgonCost, String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("password is not a PHC hash: {e}"))?;
    if argon2::Algorithm::try_from(parsed.algorithm).is_err() {
        return Err(format!("password hash algorithm {} is not Argon2", parsed.algorithm));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| format!("password hash parameters: {e}"))?;
    let output_len = parsed.hash.map_or(argon2::Params::DEFAULT_OUTPUT_LEN, |h| h.len());
    Ok(ArgonCost { m: params.m_cost(), t: params.t_cost(), p: params.p_cost(), output_len })
}

/// One Argon2 verification of `password` against the PHC string `hash` (with the hash's own cost).
fn verify(hash: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    #[cfg(test)]
    tests::record_verification(argon2_cost(hash).ok());
    Argon2::default().verify_password(password, &parsed).is_ok()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// The cost of every Argon2 verification this thread ran (the test hook of [`verify`]).
        static VERIFICATIONS: RefCell<Vec<Option<ArgonCost>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record_verification(cost: Option<ArgonCost>) {
        VERIFICATIONS.with(|v| v.borrow_mut().push(cost));
    }

    fn verifications_of(f: impl FnOnce()) -> Vec<Option<ArgonCost>> {
        VERIFICATIONS.with(|v| v.borrow_mut().clear());
        f();
        VERIFICATIONS.with(|v| std::mem::take(&mut *v.borrow_mut()))
    }

    fn hash_with(password: &str, m: u32, t: u32) -> String {
        let params = argon2::Params::new(m, t, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon.hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng)).unwrap().to_string()
    }

    #[test]
    fn unknown_users_and_wrong_passwords_run_one_verification_of_the_same_cost() {
        let mut db = UserDatabase::empty();
        db.add_hashed("op".into(), hash_with("s3cret", 1024, 1), UserRole::Operator).unwrap();
        let user_cost = argon2_cost(&db.users[0].hash).unwrap();
        let wrong = verifications_of(|| assert_eq!(db.authenticate("op", b"wrong"), None));
        let unknown = verifications_of(|| assert_eq!(db.authenticate("nobody", b"s3cret"), None));
        let right = verifications_of(|| assert!(db.authenticate("op", b"s3cret").is_some()));
        assert_eq!(wrong, [Some(user_cost)], "a wrong password: one verification with the user's cost");
        assert_eq!(unknown, wrong, "an unknown user: the same");
        assert_eq!(right, wrong, "and a right password too");

        // Users with different costs: unknown names cost what most users' hashes cost.
        db.add_hashed("a".into(), hash_with("x", 2048, 1), UserRole::Observer).unwrap();
        db.add_hashed("b".into(), hash_with("y", 2048, 1), UserRole::Observer).unwrap();
        let wrong = verifications_of(|| assert_eq!(db.authenticate("a", b"wrong"), None));
        let unknown = verifications_of(|| assert_eq!(db.authenticate("nobody", b"x"), None));
        assert_eq!(wrong.len(), 1);
        assert_eq!(unknown, wrong);
        assert_eq!(wrong[0].map(|c| c.m), Some(2048));
    }

    #[test]
    fn hashes_that_would_skip_the_verification_are_refused() {
        let mut db = UserDatabase::empty();
        for bad in ["plain", "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA", ""] {
            assert!(matches!(db.add_hashed("u".into(), bad.into(), UserRole::Operator), Err(UsersError::Invalid(_))));
        }
        assert!(db.users.is_empty());
    }

    // A cheap cost so debug-build tests stay fast; the PHC string carries its parameters.
    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon.hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng)).unwrap().to_string()
    }

    #[test]
    fn parse_and_authenticate() {
        let text = format!(
            "anonymous_role = \"observer\"\n[[user]]\nname = \"op\"\npassword = \"{}\"\nrole = \"operator\"\n\
             [[certificate]]\ncommon_name = \"Line 3\"\nrole = \"administrator\"\n",
            cheap_hash("s3cret")
        );
        let db = UserDatabase::parse(&text).unwrap();
        assert_eq!(db.authenticate("op", b"s3cret"), Some(Principal { name: "op".into(), role: UserRole::Operator }));
        assert_eq!(db.authenticate("op", b"wrong"), None);
        assert_eq!(db.authenticate("nobody", b"s3cret"), None);
        assert_eq!(db.anonymous().role, UserRole::Observer);
        assert_eq!(db.certificate_principal(&[1, 2], "CN=Line 3", Some("Line 3")).role, UserRole::Administrator);
        assert_eq!(db.certificate_principal(&[1, 2], "CN=Other", Some("Other")).role, UserRole::Observer);
    }

    #[test]
    fn thumbprints_match_case_insensitively() {
        let text = "[[certificate]]\nthumbprint = \"0A0B\"\nrole = \"operator\"\n";
        let db = UserDatabase::parse(text).unwrap();
        assert_eq!(db.certificate_principal(&[0x0a, 0x0b], "CN=x", None).role, UserRole::Operator);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(matches!(
            UserDatabase::parse("[[user]]\nname=\"a\"\npassword=\"plain\"\nrole=\"operator\""),
            Err(UsersError::Invalid(_))
        ));
        assert!(matches!(UserDatabase::parse("[[user]]\nname=\"a\"\nrole=\"king\""), Err(UsersError::Parse { .. })));
        assert!(matches!(UserDatabase::parse("[[certificate]]\nrole=\"operator\""), Err(UsersError::Invalid(_))));
        let h = cheap_hash("x");
        let dup = format!("[[user]]\nname=\"a\"\npassword=\"{h}\"\nrole=\"operator\"\n[[user]]\nname=\"a\"\npassword=\"{h}\"\nrole=\"operator\"\n");
        assert!(matches!(UserDatabase::parse(&dup), Err(UsersError::Invalid(_))));
    }

    #[test]
    fn the_dummy_hash_is_a_valid_phc_string_with_the_default_cost() {
        let db = UserDatabase::empty();
        let parsed = PasswordHash::new(&db.dummy_hash).unwrap();
        let params = argon2::Params::try_from(&parsed).unwrap();
        assert_eq!((params.m_cost(), params.t_cost(), params.p_cost()), (19456, 2, 1));
    }
}
