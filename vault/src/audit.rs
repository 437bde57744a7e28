//! The append-only, hash-chained audit log: one JSON line per key use or administrative act.
//!
//! Each record carries the hash of the one before it, and its own hash is SHA-256 over that previous hash and the
//! record's canonical JSON (without the `hash` field). Removing, reordering or editing a record breaks the chain at
//! that point, which [`verify`] reports. The chain starts from a hash of the container's serial, so a log cannot be
//! passed off as another dongle's.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... with no gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Unix uid of the peer, when known.
    pub uid: Option<u32>,
    /// Operation: sign, decrypt, generate, import, store-chain, csr, login, login-failed, unlock, ...
    pub op: String,
    /// Label of the key used, if any.
    pub key: Option<String>,
    /// Algorithm or other detail.
    pub detail: Option<String>,
    /// Whether the operation succeeded.
    pub ok: bool,
    /// Hex SHA-256 of the previous record (or of the genesis string).
    pub prev: String,
    /// Hex SHA-256 over `prev` and this record without `hash`.
    #[serde(default)]
    pub hash: String,
}

impl AuditRecord {
    fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        // serde_json writes struct fields in declaration order: a canonical form for our own records.
        let json = serde_json::to_vec(&unhashed).unwrap_or_default();
        let mut data = hex::decode(&self.prev).unwrap_or_default();
        data.extend_from_slice(&json);
        hex::encode(crate::HashAlg::Sha256.digest(&data))
    }
}

/// The hash the first record points back to.
pub fn genesis(serial: &str) -> String {
    hex::encode(crate::HashAlg::Sha256.digest(format!("certvault-audit-v1:{serial}").as_bytes()))
}

struct Tail {
    file: File,
    seq: u64,
    last_hash: String,
}

/// An open audit log, safe to append to from many threads.
pub struct AuditLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A new event, before it gets its place in the chain.
#[derive(Clone, Debug, Default)]
pub struct Event<'a> {
    /// Peer uid.
    pub uid: Option<u32>,
    /// Operation name.
    pub op: &'a str,
    /// Key label.
    pub key: Option<&'a str>,
    /// Detail (algorithm, reason).
    pub detail: Option<String>,
    /// Success.
    pub ok: bool,
}

impl AuditLog {
    /// Opens (or creates) the log and checks its chain. A partial last line, the trace of a crash in the middle of
    /// an append, is cut off and the cut is itself recorded; any other break in the chain refuses to open, so a
    /// tampered log is noticed before anything is appended to it.
    pub fn open(path: &Path, serial: &str) -> Result<AuditLog> {
        let mut cut = None;
        if let Ok(bytes) = std::fs::read(path) {
            if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
                let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
                f.set_len(keep as u64).map_err(|e| VaultError::io(format!("trimming {}", path.display()), e))?;
                cut = Some(bytes.len() - keep);
            }
        }
        let summary = verify(path, serial)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| VaultError::io(format!("opening audit log {}", path.display()), e))?;
        let log = AuditLog {
            path: path.to_path_buf(),
            tail: Mutex::new(Tail { file, seq: summary.records, last_hash: summary.last_hash }),
        };
        if let Some(n) = cut {
            log.append(Event {
                op: "log-recovered",
                detail: Some(format!("cut {n} bytes of a record interrupted by a crash")),
                ok: true,
                ..Default::default()
            })?;
        }
        Ok(log)
    }

    /// Appends one record and hands it to the OS before returning. Callers fail the operation if this fails, so no
    /// key use goes unrecorded.
    pub fn append(&self, ev: Event<'_>) -> Result<AuditRecord> {
        let mut tail = self.tail.lock().map_err(|_| VaultError::Crypto("audit log lock poisoned".into()))?;
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut rec = AuditRecord {
            seq: tail.seq + 1,
            time_ms,
            uid: ev.uid,
            op: ev.op.to_string(),
            key: ev.key.map(str::to_string),
            detail: ev.detail,
            ok: ev.ok,
            prev: tail.last_hash.clone(),
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        let mut line = serde_json::to_vec(&rec).map_err(|e| VaultError::Crypto(e.to_string()))?;
        line.push(b'\n');
        tail.file
            .write_all(&line)
            .map_err(|e| VaultError::io(format!("appending to audit log {}", self.path.display()), e))?;
        tail.seq = rec.seq;
        tail.last_hash = rec.hash.clone();
        Ok(rec)
    }

    /// Records from `from_seq` on, at most `max`.
    pub fn read(&self, from_seq: u64, max: usize) -> Result<Vec<AuditRecord>> {
        let _tail = self.tail.lock().map_err(|_| VaultError::Crypto("audit log lock poisoned".into()))?;
        read_records(&self.path, from_seq, max)
    }

    /// Number of records so far.
    pub fn records(&self) -> u64 {
        self.tail.lock().map(|t| t.seq).unwrap_or(0)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_records(path: &Path, from_seq: u64, max: usize) -> Result<Vec<AuditRecord>> {
    let f = File::open(path).map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
        let rec: AuditRecord = serde_json::from_str(&line)
            .map_err(|e| VaultError::Audit { path: path.to_path_buf(), why: format!("unparsable record: {e}") })?;
        if rec.seq >= from_seq {
            out.push(rec);
            if out.len() >= max {
                break;
            }
        }
    }
    Ok(out)
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Number of records.
    pub records: u64,
    /// Hash of the last record (the genesis hash for an empty log).
    pub last_hash: String,
}

/// Checks the whole chain of the log at `path` for the container `serial`. A missing file is an empty log.
pub fn verify(path: &Path, serial: &str) -> Result<Verified> {
    let fail = |why: String| VaultError::Audit { path: path.to_path_buf(), why };
    let mut prev = genesis(serial);
    let mut n = 0u64;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verified { records: 0, last_hash: prev }),
        Err(e) => return Err(VaultError::io(format!("opening {}", path.display()), e)),
    };
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
        let rec: AuditRecord =
            serde_json::from_str(&line).map_err(|e| fail(format!("line {}: not a record: {e}", i + 1)))?;
        if rec.seq != n + 1 {
            return Err(fail(format!("line {}: sequence {} follows {n}", i + 1, rec.seq)));
        }
        if rec.prev != prev {
            return Err(fail(format!("line {}: record {} does not follow the one before it", i + 1, rec.seq)));
        }
        if rec.compute_hash() != rec.hash {
            return Err(fail(format!("line {}: record {} was altered", i + 1, rec.seq)));
        }
        prev = rec.hash;
        n = rec.seq;
    }
    Ok(Verified { records: n, last_hash: prev })
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn ev(op: &str) -> Event<'_> {
        Event { op, key: Some("k"), ok: true, ..Default::default() }
    }

    #[test]
    fn chain_verifies_and_detects_edits_deletions_and_reordering() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.audit");
        let log = AuditLog::open(&path, "S1")?;
        for op in ["sign", "decrypt", "sign", "generate"] {
            log.append(ev(op))?;
        }
        drop(log);
        assert_eq!(verify(&path, "S1")?.records, 4);
        assert!(verify(&path, "S2").is_err(), "a log is bound to its serial");
        let good = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = good.lines().collect();

        let edited = good.replacen("\"decrypt\"", "\"sign\"", 1);
        std::fs::write(&path, edited)?;
        assert!(verify(&path, "S1").unwrap_err().to_string().contains("altered"));

        let deleted = [lines[0], lines[2], lines[3]].join("\n") + "\n";
        std::fs::write(&path, deleted)?;
        assert!(verify(&path, "S1").is_err());

        let swapped = [lines[0], lines[2], lines[1], lines[3]].join("\n") + "\n";
        std::fs::write(&path, swapped)?;
        assert!(verify(&path, "S1").is_err());
        assert!(AuditLog::open(&path, "S1").is_err(), "a broken log is not appended to");
        Ok(())
    }

    #[test]
    fn partial_last_line_is_cut_and_recorded() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.audit");
        let log = AuditLog::open(&path, "S1")?;
        log.append(ev("sign"))?;
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"{\"seq\":2,\"time_ms\":1")?;
        drop(f);
        let log = AuditLog::open(&path, "S1")?;
        log.append(ev("sign"))?;
        let recs = log.read(0, 100)?;
        assert_eq!(recs.iter().map(|r| r.op.as_str()).collect::<Vec<_>>(), ["sign", "log-recovered", "sign"]);
        assert_eq!(verify(&path, "S1")?.records, 3);
        Ok(())
    }
}
