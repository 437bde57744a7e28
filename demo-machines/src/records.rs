//! The JSON records the binaries print on stdout, one per line: machine-a's `ready`/`refused`/`stopped` events and
//! machine-b's report. Logs go to stderr, so stdout stays machine-readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What machine-a prints on stdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServerEvent {
    /// The server listens.
    Ready {
        /// The endpoint URL (with the port the listener got).
        endpoint_url: String,
        /// SHA-1 thumbprint (hex) of the server certificate, as OPC UA computes it.
        certificate_thumbprint: String,
        /// Where the private key lives (PIN values redacted).
        key: String,
        /// "Policy/Mode" of every endpoint offered.
        endpoints: Vec<String>,
    },
    /// A client certificate was refused.
    Refused {
        /// The check that failed (BadCertificateUntrusted, ...).
        status: String,
        /// What the client was told.
        wire_status: String,
        /// The channel's policy.
        policy: String,
        /// Why.
        reason: String,
        /// Whether the certificate was copied to rejected/certs.
        copied_to_rejected: bool,
    },
    /// The server shut down after a signal.
    Stopped {
        /// The signal.
        signal: String,
    },
}

/// One thing machine-b did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What (connect, subscribe, call Start, ...).
    pub step: String,
    /// "Good" or the status code name.
    pub status: String,
    /// More about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Step {
    /// Whether the step succeeded.
    pub fn ok(&self) -> bool {
        self.status == "Good"
    }
}

/// What machine-b saw of one process value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValueSummary {
    /// Data changes received.
    pub samples: u64,
    /// The first value.
    pub first: serde_json::Value,
    /// The last value.
    pub last: serde_json::Value,
    /// Smallest numeric value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest numeric value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Distinct text values in order of appearance (for State).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

impl ValueSummary {
    /// Adds one sample.
    pub fn add(&mut self, value: serde_json::Value) {
        if self.samples == 0 {
            self.first = value.clone();
        }
        self.samples += 1;
        if let Some(x) = value.as_f64() {
            self.min = Some(self.min.map_or(x, |m| m.min(x)));
            self.max = Some(self.max.map_or(x, |m| m.max(x)));
        }
        if let Some(s) = value.as_str() {
            if self.seen.last().map(String::as_str) != Some(s) && self.seen.len() < 16 {
                self.seen.push(s.to_owned());
            }
        }
        self.last = value;
    }
}

/// machine-b's report, printed as one JSON line at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Where machine-b connected.
    pub server_url: String,
    /// The negotiated security policy.
    pub policy: Option<String>,
    /// The negotiated security mode.
    pub mode: Option<String>,
    /// SHA-1 thumbprint of machine-a's certificate.
    pub server_certificate_thumbprint: Option<String>,
    /// SHA-1 thumbprint of machine-b's certificate.
    pub own_certificate_thumbprint: Option<String>,
    /// Where machine-b's key lives.
    pub own_key: String,
    /// The operator identity ("X.509 <CN> <thumbprint>" or "user <name>").
    pub user: String,
    /// Every step in order.
    pub steps: Vec<Step>,
    /// What the subscription delivered, by browse name.
    pub values: BTreeMap<String, ValueSummary>,
    /// True when every step succeeded.
    pub ok: bool,
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key URI fit for printing: PIN values redacted (file and environment PIN sources are names, not secrets).
pub fn printable_key_uri(uri: &str) -> String {
    match uri.parse::<certvault::uri::KeyUri>() {
        Ok(certvault::uri::KeyUri::Pkcs11(p)) => p.to_string_redacted(),
        Ok(certvault::uri::KeyUri::Vaultd(mut v)) => {
            if matches!(v.pin, Some(certvault::uri::PinSource::Value(_))) {
                v.pin = None;
            }
            v.to_string()
        }
        Err(_) => "<not a key URI>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_json() {
        let e = ServerEvent::Stopped { signal: "SIGTERM".into() };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(line, r#"{"event":"stopped","signal":"SIGTERM"}"#);
        assert_eq!(serde_json::from_str::<ServerEvent>(&line).unwrap(), e);
    }

    #[test]
    fn summaries_track_ranges_and_states() {
        let mut s = ValueSummary::default();
        for v in [3.0, 1.0, 2.0] {
            s.add(v.into());
        }
        assert_eq!((s.samples, s.min, s.max), (3, Some(1.0), Some(3.0)));
        assert_eq!((s.first.as_f64(), s.last.as_f64()), (Some(3.0), Some(2.0)));
        let mut st = ValueSummary::default();
        for v in ["Idle", "Running", "Running", "Stopped"] {
            st.add(v.into());
        }
        assert_eq!(st.seen, ["Idle", "Running", "Stopped"]);
    }

    #[test]
    fn pin_values_are_not_printed() {
        let uri = "pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234";
        assert!(!printable_key_uri(uri).contains("1234"));
        let uri = "vaultd:object=k?pin-value=1234";
        assert!(!printable_key_uri(uri).contains("1234"));
        assert!(printable_key_uri("vaultd:object=k?pin-source=file:/p").contains("file:/p"));
    }
}
