//! Key URIs: RFC 7512 `pkcs11:` URIs for keys on tokens, and our own `vaultd:` URI for keys in the vault daemon.
//!
//! Both share the RFC 7512 syntax: `scheme:` then `;`-separated path attributes, then optionally `?` and
//! `&`-separated query attributes, every value percent-encoded where needed.
//!
//! ```
//! use certvault::uri::KeyUri;
//! let uri: KeyUri = "pkcs11:token=vault;object=opcua-server?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin"
//!     .parse()?;
//! let again: KeyUri = uri.to_string().parse()?;
//! assert_eq!(uri, again);
//! # Ok::<(), certvault::VaultError>(())
//! ```
//!
//! Choices where RFC 7512 leaves room (documented so operators can predict them):
//! - A URI must select a key explicitly, by `object` (label) or `id`; [`Pkcs11Uri::key_selector`] refuses a URI with
//!   neither, because "the first key on the token" is never what an operator meant.
//! - Unknown `pkcs11:` *path* attributes are kept (so the URI round-trips) but, as RFC 7512 §3.3 requires, such a URI
//!   matches no token: [`Pkcs11Uri::check_usable`] rejects it. Unknown *query* attributes are kept and ignored.
//! - An attribute given twice is an error (RFC 7512 §2.3 allows each at most once).
//! - `pin-source` accepts `file:/path`, a bare absolute path (RFC 7512's example) and, as our extension,
//!   `env:VARIABLE`. `pin-source` and `pin-value` together are an error.
//! - `vaultd:` URIs are ours, so they are strict: any unknown attribute is an error (a typo must not go unnoticed).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::error::{Result, VaultError};
use crate::key::KeySelector;

/// Where a PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN; one trailing newline is ignored.
    File(PathBuf),
    /// An environment variable holding the PIN (our extension to RFC 7512).
    Env(String),
    /// The PIN itself (`pin-value`): convenient for tests, a bad idea in configuration files.
    Value(Zeroizing<String>),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => f.debug_tuple("File").field(p).finish(),
            PinSource::Env(v) => f.debug_tuple("Env").field(v).finish(),
            // Debug output ends up in logs: never print the PIN.
            PinSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl PinSource {
    /// Parses a `pin-source` value: `file:/path`, `/path` or `env:VAR`.
    pub fn parse_source(value: &str) -> std::result::Result<Self, String> {
        if let Some(path) = value.strip_prefix("file:") {
            // `file:///etc/pin` and `file:/etc/pin` both name /etc/pin.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("pin-source file: has no path".into());
            }
            Ok(PinSource::File(PathBuf::from(path)))
        } else if let Some(var) = value.strip_prefix("env:") {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(format!("pin-source env:{var} is not a valid variable name"));
            }
            Ok(PinSource::Env(var.to_string()))
        } else if value.starts_with('/') {
            Ok(PinSource::File(PathBuf::from(value)))
        } else {
            Err(format!("pin-source {value:?} is neither file:/path nor env:VARIABLE"))
        }
    }

    /// Reads the PIN. A file's single trailing newline (`\n` or `\r\n`) is dropped, as editors add one.
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            PinSource::File(path) => {
                let mut pin = Zeroizing::new(
                    std::fs::read(path)
                        .map_err(|e| VaultError::io(format!("reading PIN file {}", path.display()), e))?,
                );
                if pin.last() == Some(&b'\n') {
                    pin.pop();
                    if pin.last() == Some(&b'\r') {
                        pin.pop();
                    }
                }
                Ok(pin)
            }
            PinSource::Env(var) => match std::env::var_os(var) {
                Some(v) => Ok(Zeroizing::new(v.into_encoded_bytes())),
                None => Err(VaultError::InvalidInput(format!("the PIN variable {var} is not set"))),
            },
            PinSource::Value(v) => Ok(Zeroizing::new(v.as_bytes().to_vec())),
        }
    }

    fn query_pair(&self) -> (&'static str, String) {
        match self {
            PinSource::File(p) => ("pin-source", format!("file:{}", p.display())),
            PinSource::Env(v) => ("pin-source", format!("env:{v}")),
            PinSource::Value(v) => ("pin-value", v.to_string()),
        }
    }
}

/// The RFC 7512 object class (`type=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// `type=private`.
    Private,
    /// `type=public`.
    Public,
    /// `type=cert`.
    Cert,
    /// `type=secret-key`.
    SecretKey,
    /// `type=data`.
    Data,
}

impl ObjectType {
    fn as_str(&self) -> &'static str {
        match self {
            ObjectType::Private => "private",
            ObjectType::Public => "public",
            ObjectType::Cert => "cert",
            ObjectType::SecretKey => "secret-key",
            ObjectType::Data => "data",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "private" => ObjectType::Private,
            "public" => ObjectType::Public,
            "cert" => ObjectType::Cert,
            "secret-key" => ObjectType::SecretKey,
            "data" => ObjectType::Data,
            _ => return None,
        })
    }
}

/// An RFC 7512 `pkcs11:` URI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `slot-id`: the slot number.
    pub slot_id: Option<u64>,
    /// `object`: the object label (CKA_LABEL).
    pub object: Option<String>,
    /// `id`: the object id (CKA_ID), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type`: the object class.
    pub object_type: Option<ObjectType>,
    /// `module-path`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `pin-source` or `pin-value`.
    pub pin: Option<PinSource>,
    /// Path attributes this crate does not know, decoded. Their presence makes the URI match nothing.
    pub other_path: Vec<(String, String)>,
    /// Query attributes this crate does not know, decoded; ignored.
    pub other_query: Vec<(String, String)>,
}

impl Pkcs11Uri {
    /// Which key the URI selects: by `id` when given (the label is then checked by the backend), else by `object`.
    /// Fails when neither is present: a URI never means "the first key on the token".
    pub fn key_selector(&self) -> Result<KeySelector> {
        self.check_usable()?;
        if let Some(t) = self.object_type {
            if t != ObjectType::Private {
                return Err(self.bad(format!("type={} does not name a private key", t.as_str())));
            }
        }
        match (&self.id, &self.object) {
            (Some(id), _) => Ok(KeySelector::Id(id.clone())),
            (None, Some(label)) => Ok(KeySelector::Label(label.clone())),
            (None, None) => Err(self.bad(
                "the URI selects no key: add object=<label> or id=<hex bytes> (never the first key on the token)"
                    .into(),
            )),
        }
    }

    /// Fails if the URI carries path attributes we do not understand: RFC 7512 §3.3 says it then matches nothing,
    /// and failing loudly beats opening a different token than the operator meant.
    pub fn check_usable(&self) -> Result<()> {
        if let Some((name, _)) = self.other_path.first() {
            return Err(self.bad(format!("unknown path attribute {name:?}: RFC 7512 says such a URI matches no token")));
        }
        Ok(())
    }

    fn bad(&self, why: String) -> VaultError {
        VaultError::BadUri { uri: self.to_string_redacted(), why }
    }

    /// The URI with any `pin-value` replaced by `***`, for messages and logs.
    pub fn to_string_redacted(&self) -> String {
        let mut copy = self.clone();
        if let Some(PinSource::Value(_)) = copy.pin {
            copy.pin = Some(PinSource::Value(Zeroizing::new("***".into())));
        }
        copy.to_string()
    }

    fn parse_with(uri: &str) -> std::result::Result<Self, String> {
        let rest = strip_scheme(uri, "pkcs11").ok_or("does not start with pkcs11:")?;
        let (path, query) = split_query(rest);
        let mut out = Pkcs11Uri::default();
        let mut seen = Vec::new();
        for (name, raw) in attributes(path, ';')? {
            once(&mut seen, name)?;
            match name {
                "token" => out.token = Some(decode_str(raw)?),
                "manufacturer" => out.manufacturer = Some(decode_str(raw)?),
                "serial" => out.serial = Some(decode_str(raw)?),
                "model" => out.model = Some(decode_str(raw)?),
                "object" => out.object = Some(decode_str(raw)?),
                "id" => out.id = Some(percent_decode(raw)?),
                "slot-id" => {
                    let s = decode_str(raw)?;
                    out.slot_id = Some(s.parse().map_err(|_| format!("slot-id {s:?} is not a number"))?);
                }
                "type" => {
                    let s = decode_str(raw)?;
                    out.object_type = Some(ObjectType::parse(&s).ok_or(format!("unknown type {s:?}"))?);
                }
                other => out.other_path.push((other.to_string(), decode_str(raw)?)),
            }
        }
        if let Some(query) = query {
            for (name, raw) in attributes(query, '&')? {
                once(&mut seen, name)?;
                match name {
                    "module-path" => out.module_path = Some(PathBuf::from(decode_str(raw)?)),
                    "pin-source" => out.pin = Some(pin_source(&mut out.pin, &decode_str(raw)?)?),
                    "pin-value" => {
                        if out.pin.is_some() {
                            return Err("pin-source and pin-value are both given".into());
                        }
                        out.pin = Some(PinSource::Value(Zeroizing::new(decode_str(raw)?)));
                    }
                    other => out.other_query.push((other.to_string(), decode_str(raw)?)),
                }
            }
        }
        Ok(out)
    }
}

fn pin_source(current: &mut Option<PinSource>, value: &str) -> std::result::Result<PinSource, String> {
    if current.is_some() {
        return Err("pin-source and pin-value are both given".into());
    }
    PinSource::parse_source(value)
}

impl FromStr for Pkcs11Uri {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self> {
        Pkcs11Uri::parse_with(s).map_err(|why| VaultError::BadUri { uri: redact(s), why })
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<(&str, String)> = Vec::new();
        let s = |v: &str| encode(v.as_bytes(), PATH_EXTRA);
        if let Some(v) = &self.token {
            path.push(("token", s(v)));
        }
        if let Some(v) = &self.manufacturer {
            path.push(("manufacturer", s(v)));
        }
        if let Some(v) = &self.serial {
            path.push(("serial", s(v)));
        }
        if let Some(v) = &self.model {
            path.push(("model", s(v)));
        }
        if let Some(v) = &self.slot_id {
            path.push(("slot-id", v.to_string()));
        }
        if let Some(v) = &self.object {
            path.push(("object", s(v)));
        }
        if let Some(v) = &self.id {
            // RFC 7512 §2.3: ids are written fully percent-encoded.
            path.push(("id", v.iter().map(|b| format!("%{b:02X}")).collect()));
        }
        if let Some(v) = &self.object_type {
            path.push(("type", v.as_str().to_string()));
        }
        for (k, v) in &self.other_path {
            path.push((k, s(v)));
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        let q = |v: &str| encode(v.as_bytes(), QUERY_EXTRA);
        if let Some(p) = &self.module_path {
            query.push(("module-path", q(&p.to_string_lossy())));
        }
        if let Some(pin) = &self.pin {
            let (k, v) = pin.query_pair();
            query.push((k, q(&v)));
        }
        for (k, v) in &self.other_query {
            query.push((k, q(v)));
        }
        write_uri(f, "pkcs11", &path, &query)
    }
}

/// A key in the vault daemon: `vaultd:serial=CV-0001;object=opcua-server?socket=/run/certvault/vaultd.sock&pin-source=file:/etc/certvault/pin`.
///
/// Path attributes: `serial` (the container's serial number), `object` (key label), `id` (key id, percent-encoded
/// bytes). Query attributes: `socket`, `pin-source`, `pin-value`. Nothing else is accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultdUri {
    /// The container's serial number.
    pub serial: Option<String>,
    /// The key label.
    pub object: Option<String>,
    /// The key id.
    pub id: Option<Vec<u8>>,
    /// The daemon's socket; the client's default when absent.
    pub socket: Option<PathBuf>,
    /// Where the PIN comes from.
    pub pin: Option<PinSource>,
}

impl VaultdUri {
    /// Which key the URI selects (id first, then label); an error when it names none.
    pub fn key_selector(&self) -> Result<KeySelector> {
        match (&self.id, &self.object) {
            (Some(id), _) => Ok(KeySelector::Id(id.clone())),
            (None, Some(label)) => Ok(KeySelector::Label(label.clone())),
            (None, None) => Err(VaultError::BadUri {
                uri: self.to_string(),
                why: "the URI selects no key: add object=<label> or id=<hex bytes>".into(),
            }),
        }
    }

    fn parse_with(uri: &str) -> std::result::Result<Self, String> {
        let rest = strip_scheme(uri, "vaultd").ok_or("does not start with vaultd:")?;
        let (path, query) = split_query(rest);
        let mut out = VaultdUri::default();
        let mut seen = Vec::new();
        for (name, raw) in attributes(path, ';')? {
            once(&mut seen, name)?;
            match name {
                "serial" => out.serial = Some(decode_str(raw)?),
                "object" => out.object = Some(decode_str(raw)?),
                "id" => out.id = Some(percent_decode(raw)?),
                other => return Err(format!("unknown path attribute {other:?} (known: serial, object, id)")),
            }
        }
        if let Some(query) = query {
            for (name, raw) in attributes(query, '&')? {
                once(&mut seen, name)?;
                match name {
                    "socket" => out.socket = Some(PathBuf::from(decode_str(raw)?)),
                    "pin-source" => out.pin = Some(pin_source(&mut out.pin, &decode_str(raw)?)?),
                    "pin-value" => {
                        if out.pin.is_some() {
                            return Err("pin-source and pin-value are both given".into());
                        }
                        out.pin = Some(PinSource::Value(Zeroizing::new(decode_str(raw)?)));
                    }
                    other => {
                        return Err(format!("unknown query attribute {other:?} (known: socket, pin-source, pin-value)"))
                    }
                }
            }
        }
        Ok(out)
    }
}

impl FromStr for VaultdUri {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self> {
        VaultdUri::parse_with(s).map_err(|why| VaultError::BadUri { uri: redact(s), why })
    }
}

impl fmt::Display for VaultdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<(&str, String)> = Vec::new();
        if let Some(v) = &self.serial {
            path.push(("serial", encode(v.as_bytes(), PATH_EXTRA)));
        }
        if let Some(v) = &self.object {
            path.push(("object", encode(v.as_bytes(), PATH_EXTRA)));
        }
        if let Some(v) = &self.id {
            path.push(("id", v.iter().map(|b| format!("%{b:02X}")).collect()));
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(p) = &self.socket {
            query.push(("socket", encode(p.to_string_lossy().as_bytes(), QUERY_EXTRA)));
        }
        if let Some(pin) = &self.pin {
            let (k, v) = pin.query_pair();
            query.push((k, encode(v.as_bytes(), QUERY_EXTRA)));
        }
        write_uri(f, "vaultd", &path, &query)
    }
}

/// A key URI of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyUri {
    /// A key on a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
    /// A key in the vault daemon.
    Vaultd(VaultdUri),
}

impl KeyUri {
    /// Which key the URI selects.
    pub fn key_selector(&self) -> Result<KeySelector> {
        match self {
            KeyUri::Pkcs11(u) => u.key_selector(),
            KeyUri::Vaultd(u) => u.key_selector(),
        }
    }

    /// Where the PIN comes from, if the URI says.
    pub fn pin(&self) -> Option<&PinSource> {
        match self {
            KeyUri::Pkcs11(u) => u.pin.as_ref(),
            KeyUri::Vaultd(u) => u.pin.as_ref(),
        }
    }
}

impl FromStr for KeyUri {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self> {
        if strip_scheme(s, "pkcs11").is_some() {
            Ok(KeyUri::Pkcs11(s.parse()?))
        } else if strip_scheme(s, "vaultd").is_some() {
            Ok(KeyUri::Vaultd(s.parse()?))
        } else {
            Err(VaultError::BadUri { uri: redact(s), why: "a key URI starts with pkcs11: or vaultd:".into() })
        }
    }
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyUri::Pkcs11(u) => u.fmt(f),
            KeyUri::Vaultd(u) => u.fmt(f),
        }
    }
}

// Characters RFC 7512 lets stand unencoded besides the RFC 3986 unreserved ones.
const RES_AVAIL: &[u8] = b":[]@!$'()*+,=";
const PATH_EXTRA: &[u8] = b"&";
const QUERY_EXTRA: &[u8] = b"/?|;";

fn encode(bytes: &[u8], extra: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || RES_AVAIL.contains(&b) || extra.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn write_uri(
    f: &mut fmt::Formatter<'_>,
    scheme: &str,
    path: &[(&str, String)],
    query: &[(&str, String)],
) -> fmt::Result {
    write!(f, "{scheme}:")?;
    for (i, (k, v)) in path.iter().enumerate() {
        if i > 0 {
            f.write_str(";")?;
        }
        write!(f, "{k}={v}")?;
    }
    for (i, (k, v)) in query.iter().enumerate() {
        f.write_str(if i == 0 { "?" } else { "&" })?;
        write!(f, "{k}={v}")?;
    }
    Ok(())
}

fn strip_scheme<'a>(uri: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = uri.split_once(':')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn split_query(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    }
}

fn attributes(part: &str, sep: char) -> std::result::Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    for item in part.split(sep) {
        if item.is_empty() {
            // Tolerate `pkcs11:` and a trailing separator, which tools emit.
            continue;
        }
        let (name, value) = item.split_once('=').ok_or_else(|| format!("attribute {:?} has no '='", redact(item)))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(format!("bad attribute name {name:?}"));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn once<'a>(seen: &mut Vec<&'a str>, name: &'a str) -> std::result::Result<(), String> {
    if seen.contains(&name) {
        return Err(format!("attribute {name:?} appears twice"));
    }
    seen.push(name);
    Ok(())
}

/// Decodes `%XX` escapes. Malformed escapes (`%`, `%4`, `%zz`) are errors, not passed through.
fn percent_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent escape")?;
            let hi = (hex[0] as char).to_digit(16);
            let lo = (hex[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(format!("bad percent escape %{}{}", hex[0] as char, hex[1] as char)),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn decode_str(s: &str) -> std::result::Result<String, String> {
    String::from_utf8(percent_decode(s)?).map_err(|_| "attribute value is not UTF-8 after percent-decoding".into())
}

/// Hides a `pin-value` in a URI that failed to parse, so the error message can be logged.
fn redact(uri: &str) -> String {
    let Some((head, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|p| if p.starts_with("pin-value=") { "pin-value=***".to_string() } else { p.to_string() })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pkcs11Uri {
        s.parse().unwrap()
    }

    #[test]
    fn parses_rfc7512_examples() {
        let u = p("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=");
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.model.as_deref(), Some("1.0"));
        assert_eq!(u.serial.as_deref(), Some(""));
        assert_eq!(u.object_type, Some(ObjectType::Cert));
        assert_eq!(u.id.as_deref(), Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..]));
        assert_eq!(p(&u.to_string()), u);

        let u =
            p("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1&pin-source=file:/etc/token");
        assert_eq!(u.module_path, Some(PathBuf::from("/mnt/libmypkcs11.so.1")));
        assert_eq!(u.pin, Some(PinSource::File("/etc/token".into())));
        assert_eq!(u.key_selector().unwrap(), KeySelector::Label("my-sign-key".into()));
        assert_eq!(p(&u.to_string()), u);

        let u = p("pkcs11:slot-id=3;id=%01%02?pin-value=12%2634");
        assert_eq!(u.slot_id, Some(3));
        assert_eq!(u.pin, Some(PinSource::Value(Zeroizing::new("12&34".into()))));
        assert_eq!(u.key_selector().unwrap(), KeySelector::Id(vec![1, 2]));
        assert_eq!(p(&u.to_string()), u);
        assert!(!u.to_string_redacted().contains("12"));
        assert!(!format!("{:?}", u).contains("12&34"));
    }

    #[test]
    fn id_takes_literal_bytes_too() {
        assert_eq!(p("pkcs11:id=ab%00").id, Some(vec![b'a', b'b', 0]));
    }

    #[test]
    fn selects_a_key_explicitly_or_fails() {
        let err = p("pkcs11:token=t").key_selector().unwrap_err();
        assert!(matches!(err, VaultError::BadUri { .. }), "{err}");
        assert!(p("pkcs11:object=k;type=cert").key_selector().is_err());
        assert!(p("pkcs11:").key_selector().is_err());
    }

    #[test]
    fn unknown_attributes() {
        // Unknown path attribute: kept, round-trips, but matches nothing.
        let u = p("pkcs11:token=t;object=k;x-vendor=1");
        assert_eq!(u.other_path, vec![("x-vendor".to_string(), "1".to_string())]);
        assert_eq!(p(&u.to_string()), u);
        assert!(u.check_usable().is_err());
        assert!(u.key_selector().is_err());
        // Unknown query attribute: kept and ignored.
        let u = p("pkcs11:object=k?x-hint=abc");
        assert_eq!(u.other_query.len(), 1);
        assert!(u.key_selector().is_ok());
        // vaultd: is strict.
        assert!("vaultd:object=k;colour=red".parse::<VaultdUri>().is_err());
        assert!("vaultd:object=k?sockt=/x".parse::<VaultdUri>().is_err());
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "pkcs11",
            "http:object=a",
            "pkcs11:object=%",
            "pkcs11:object=%4",
            "pkcs11:object=%zz",
            "pkcs11:object=%C3%28",
            "pkcs11:object",
            "pkcs11:=x",
            "pkcs11:object=a;object=b",
            "pkcs11:slot-id=-1",
            "pkcs11:slot-id=x",
            "pkcs11:type=banana",
            "pkcs11:object=a?pin-value=1&pin-source=file:/x",
            "pkcs11:object=a?pin-source=relative/path",
            "pkcs11:object=a?pin-source=env:",
            "pkcs11:object=a?pin-source=file:",
            "pkcs11:ob ject=a",
            "vaultd:object=%G0",
        ] {
            assert!(bad.parse::<KeyUri>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn errors_never_show_the_pin() {
        let err = "pkcs11:object=%zz?pin-value=s3cret".parse::<KeyUri>().unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn scheme_is_case_insensitive_and_empty_items_are_tolerated() {
        assert_eq!(p("PKCS11:object=k;").object.as_deref(), Some("k"));
    }

    #[test]
    fn vaultd_uri_round_trips() {
        let s = "vaultd:serial=CV-0001;object=opcua-server?socket=/run/certvault/vaultd.sock&pin-source=file:/etc/certvault/pin";
        let u: KeyUri = s.parse().unwrap();
        let KeyUri::Vaultd(v) = &u else { panic!("not vaultd") };
        assert_eq!(v.serial.as_deref(), Some("CV-0001"));
        assert_eq!(v.socket, Some(PathBuf::from("/run/certvault/vaultd.sock")));
        assert_eq!(v.pin, Some(PinSource::File("/etc/certvault/pin".into())));
        assert_eq!(u.key_selector().unwrap(), KeySelector::Label("opcua-server".into()));
        assert_eq!(u.to_string(), s);
        let u2: KeyUri = "vaultd:id=%DE%AD?pin-source=env:CV_PIN".parse().unwrap();
        assert_eq!(u2.key_selector().unwrap(), KeySelector::Id(vec![0xde, 0xad]));
        assert_eq!(u2.to_string().parse::<KeyUri>().unwrap(), u2);
        assert!("vaultd:serial=x".parse::<VaultdUri>().unwrap().key_selector().is_err());
    }

    #[test]
    fn awkward_values_round_trip() {
        let u = Pkcs11Uri {
            token: Some("a;b=c?d&e%f é/".into()),
            object: Some("k".into()),
            module_path: Some("/opt/my lib;x?.so".into()),
            pin: Some(PinSource::Value(Zeroizing::new("p&i=n;?#".into()))),
            ..Default::default()
        };
        assert_eq!(p(&u.to_string()), u);
    }

    #[test]
    fn pin_sources_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, b"123456\n").unwrap();
        assert_eq!(PinSource::File(f.clone()).read().unwrap().as_slice(), b"123456");
        std::fs::write(&f, b"123456\r\n").unwrap();
        assert_eq!(PinSource::File(f.clone()).read().unwrap().as_slice(), b"123456");
        // Only one newline is trimmed: a PIN may legitimately end in whitespace.
        std::fs::write(&f, b"12 \n\n").unwrap();
        assert_eq!(PinSource::File(f.clone()).read().unwrap().as_slice(), b"12 \n");
        assert!(PinSource::File(dir.path().join("missing")).read().is_err());
        assert_eq!(PinSource::parse_source("file:///x/y").unwrap(), PinSource::File("/x/y".into()));
        assert_eq!(PinSource::parse_source("/x").unwrap(), PinSource::File("/x".into()));
        assert!(PinSource::Env("CERTVAULT_SURELY_UNSET_VAR_4711".into()).read().is_err());
        assert_eq!(PinSource::Value(Zeroizing::new("42".into())).read().unwrap().as_slice(), b"42");
    }
}
