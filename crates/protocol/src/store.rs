//! The results store: one SQLite database (rusqlite, SQLite compiled in, WAL journal) holding every
//! finished unit of a sweep under its content key ([`crate::key`]).
//!
//! ## Schema (version 1)
//! ```sql
//! meta  (name TEXT PRIMARY KEY, value TEXT)              -- schema_version = 1
//! units (key TEXT PRIMARY KEY,                           -- SHA-256 of the unit spec
//!        kind TEXT, checkpoint TEXT, dataset TEXT, config TEXT,
//!        step INTEGER, seed INTEGER, loss TEXT,          -- the spec's fields, queryable
//!        spec TEXT,                                      -- the spec as canonical JSON
//!        status TEXT CHECK (status IN ('done','failed')),
//!        result TEXT,                                    -- canonical JSON object (done)
//!        error TEXT,                                     -- message (failed)
//!        blob_sha256 TEXT,                               -- hash of the unit's artifact, if any
//!        elapsed_ms INTEGER, finished_at INTEGER)        -- provenance, not part of the result
//! blobs (key TEXT PRIMARY KEY REFERENCES units(key), data BLOB)  -- features, weak labels
//! ```
//! A unit is absent (to do), `done` or `failed`; there is no "running" state, so nothing can be left
//! half-finished. The three kinds map to: `features` per (checkpoint, dataset, feature config) with the
//! f32 matrix as blob; `weak_labels` per (weak model, dataset, seed) with the f64 soft labels as blob;
//! `probe` per (checkpoint, seed, loss) with metrics as result.
//!
//! ## Crash safety
//! [`Store::run_unit`] computes outside any transaction, then writes the unit row and its blob in one
//! `BEGIN IMMEDIATE … COMMIT`. A process killed before the commit leaves no trace of the unit (WAL
//! frames of an uncommitted transaction are ignored on recovery) and the unit runs again on resume; a
//! commit is durable (`synchronous = FULL`). Since the computation is deterministic, a resumed sweep ends
//! with exactly the rows of an uninterrupted one ([`Store::digest`] compares them, leaving out the
//! provenance columns). Re-running a finished unit does nothing; a failed unit stays failed (its error
//! recorded) unless [`RunPolicy::retry_failed`]. A panic in the unit's computation is caught and
//! recorded as a failure, so one corrupt checkpoint does not stop the sweep.
//!
//! ## Shards and merging
//! Each shard of a job array writes its own database (SQLite's locking is not safe on network file
//! systems). [`merge`] copies units from shard databases into one, in a single transaction: a unit absent
//! from the destination is added; an identical duplicate (same status, result, error and blob hash) is
//! counted and skipped, so merging twice changes nothing; a `done` unit replaces a `failed` one (a later
//! retry succeeded) and a `failed` one never replaces a `done` one; two different `done` results for the
//! same key are a conflict, reported with the key and the file, and nothing is merged.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::key::{canonical_json, sha256_hex, UnitKey, UnitKind, UnitSpec};

/// Version of the schema this crate writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    dataset TEXT NOT NULL,
    config TEXT NOT NULL,
    step INTEGER,
    seed INTEGER,
    loss TEXT,
    spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    result TEXT,
    error TEXT,
    blob_sha256 TEXT,
    elapsed_ms INTEGER NOT NULL,
    finished_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS units_kind_status ON units (kind, status);
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT PRIMARY KEY REFERENCES units (key) ON DELETE CASCADE,
    data BLOB NOT NULL
);
";

/// Whether a recorded unit succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    Done,
    Failed,
}

impl UnitStatus {
    fn as_str(&self) -> &'static str {
        match self {
            UnitStatus::Done => "done",
            UnitStatus::Failed => "failed",
        }
    }
}

/// What a successful unit produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitOutput {
    /// Metrics and small values (stored as canonical JSON; exported as columns).
    pub result: Map<String, Value>,
    /// A large artifact (features, soft labels), stored beside the row.
    pub blob: Option<Vec<u8>>,
}

/// What `run_unit` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The unit was already finished; nothing ran.
    Skipped(UnitStatus),
    /// It ran and its result is committed.
    Done,
    /// It ran and failed; the message is committed.
    Failed(String),
}

/// Re-run policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunPolicy {
    /// Run units recorded as failed again (e.g. after replacing a corrupt checkpoint file).
    pub retry_failed: bool,
}

/// One stored unit.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitRecord {
    pub key: UnitKey,
    pub spec: UnitSpec,
    pub status: UnitStatus,
    pub result: Option<Map<String, Value>>,
    pub error: Option<String>,
    pub blob_sha256: Option<String>,
    /// Provenance (not compared by `digest` or `merge`).
    pub elapsed_ms: i64,
    pub finished_at: i64,
}

/// Counts of a merge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeReport {
    /// Units new to the destination.
    pub added: usize,
    /// Duplicates identical to the destination's.
    pub identical: usize,
    /// Failed units replaced by a source's done unit.
    pub replaced_failed: usize,
    /// Source units not taken because the destination already finished them (a done unit over a
    /// failed one, or a failed one with a different message).
    pub kept: usize,
}

/// A callback on a unit key (see [`Store::set_before_commit`]).
#[doc(hidden)]
pub type Hook = Box<dyn FnMut(&UnitKey)>;

/// An open results database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    before_commit: std::cell::RefCell<Option<Hook>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

struct Row {
    status: UnitStatus,
    result: Option<String>,
    error: Option<String>,
    blob_sha256: Option<String>,
}

impl Row {
    fn same_content(&self, other: &Row) -> bool {
        self.status == other.status
            && self.result == other.result
            && self.error == other.error
            && self.blob_sha256 == other.blob_sha256
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

impl Store {
    /// Opens (creating if needed) a results database.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(|e| sql_err(&path, e))?;
        Self::init(conn, path)
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<Store> {
        let err = |e| sql_err(&path, e);
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store {
                path,
                problem: format!("could not switch to WAL journaling (got {mode})"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        let version: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        match version {
            None => {
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(err)?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(Error::Store {
                    path,
                    problem: format!("schema version {v}, this build reads {SCHEMA_VERSION}"),
                })
            }
        }
        tx.commit().map_err(err)?;
        Ok(Store {
            conn,
            path,
            before_commit: std::cell::RefCell::new(None),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Test hook: called inside the write transaction of every unit, after its rows are written and
    /// before the commit (the kill-during-write tests pause here).
    #[doc(hidden)]
    pub fn set_before_commit(&self, hook: Option<Hook>) {
        *self.before_commit.borrow_mut() = hook;
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |e| sql_err(&self.path, e)
    }

    fn row(conn: &Connection, key: &str) -> rusqlite::Result<Option<Row>> {
        conn.query_row(
            "SELECT status, result, error, blob_sha256 FROM units WHERE key = ?1",
            [key],
            |r| {
                let status: String = r.get(0)?;
                Ok(Row {
                    status: if status == "done" {
                        UnitStatus::Done
                    } else {
                        UnitStatus::Failed
                    },
                    result: r.get(1)?,
                    error: r.get(2)?,
                    blob_sha256: r.get(3)?,
                })
            },
        )
        .optional()
    }

    /// The unit's status, `None` when it has not finished.
    pub fn status(&self, key: &UnitKey) -> Result<Option<UnitStatus>> {
        Ok(Self::row(&self.conn, key.as_str())
            .map_err(self.err())?
            .map(|r| r.status))
    }

    /// The keys in `keys` that have not finished (to do), in the given order.
    pub fn pending(&self, keys: &[UnitKey]) -> Result<Vec<UnitKey>> {
        let mut out = Vec::new();
        for k in keys {
            if self.status(k)?.is_none() {
                out.push(k.clone());
            }
        }
        Ok(out)
    }

    /// Runs a unit unless it has finished, and commits its outcome.
    ///
    /// `compute` returns the unit's output or an error message; both (and a panic) are recorded.
    /// `compute` may read the store (the blobs of the units it depends on).
    pub fn run_unit<F, E>(&self, spec: &UnitSpec, policy: RunPolicy, compute: F) -> Result<Outcome>
    where
        F: FnOnce() -> std::result::Result<UnitOutput, E>,
        E: Display,
    {
        let key = spec.key()?;
        if let Some(st) = self.status(&key)? {
            if st == UnitStatus::Done || !policy.retry_failed {
                return Ok(Outcome::Skipped(st));
            }
        }
        let started = Instant::now();
        let (row, blob) = match catch_unwind(AssertUnwindSafe(compute)) {
            Ok(Ok(out)) => {
                let result = canonical_json(&Value::Object(out.result));
                let sha = out.blob.as_deref().map(sha256_hex);
                (
                    Row {
                        status: UnitStatus::Done,
                        result: Some(result),
                        error: None,
                        blob_sha256: sha,
                    },
                    out.blob,
                )
            }
            Ok(Err(e)) => (
                Row {
                    status: UnitStatus::Failed,
                    result: None,
                    error: Some(e.to_string()),
                    blob_sha256: None,
                },
                None,
            ),
            Err(p) => (
                Row {
                    status: UnitStatus::Failed,
                    result: None,
                    error: Some(format!("panicked: {}", panic_message(p.as_ref()))),
                    blob_sha256: None,
                },
                None,
            ),
        };
        let elapsed_ms = started.elapsed().as_millis() as i64;
        self.write(&key, spec, &row, blob.as_deref(), elapsed_ms)?;
        Ok(match row.status {
            UnitStatus::Done => Outcome::Done,
            UnitStatus::Failed => Outcome::Failed(row.error.unwrap_or_default()),
        })
    }

    fn write(
        &self,
        key: &UnitKey,
        spec: &UnitSpec,
        row: &Row,
        blob: Option<&[u8]>,
        elapsed_ms: i64,
    ) -> Result<()> {
        let path = self.path.clone();
        let err = |e| sql_err(&path, e);
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(err)?;
        // Another process may have finished the unit meanwhile.
        if let Some(existing) = Self::row(&tx, key.as_str()).map_err(err)? {
            match (existing.status, row.status) {
                (UnitStatus::Done, UnitStatus::Done) => {
                    if existing.same_content(row) {
                        return Ok(());
                    }
                    return Err(Error::Store {
                        path,
                        problem: format!(
                            "unit {key} ({}) was finished concurrently with a different result: \
                             the computation is not deterministic",
                            spec.canonical_json()
                        ),
                    });
                }
                (UnitStatus::Done, UnitStatus::Failed) => return Ok(()),
                (UnitStatus::Failed, _) => {
                    tx.execute("DELETE FROM units WHERE key = ?1", [key.as_str()])
                        .map_err(err)?;
                }
            }
        }
        insert_unit(&tx, key, spec, row, blob, elapsed_ms, now_unix()).map_err(err)?;
        if let Some(hook) = self.before_commit.borrow_mut().as_mut() {
            hook(key);
        }
        tx.commit().map_err(err)
    }

    /// One unit's record.
    pub fn get(&self, key: &UnitKey) -> Result<Option<UnitRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{SELECT_RECORD} WHERE key = ?1"))
            .map_err(self.err())?;
        let mut rows = stmt.query([key.as_str()]).map_err(self.err())?;
        match rows.next().map_err(self.err())? {
            Some(r) => Ok(Some(self.parse_record(r)?)),
            None => Ok(None),
        }
    }

    /// A unit's artifact.
    pub fn blob(&self, key: &UnitKey) -> Result<Option<Vec<u8>>> {
        self.conn
            .query_row(
                "SELECT data FROM blobs WHERE key = ?1",
                [key.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// All records (of one kind, or all), ordered by key.
    pub fn records(&self, kind: Option<UnitKind>) -> Result<Vec<UnitRecord>> {
        let sql = match kind {
            Some(_) => format!("{SELECT_RECORD} WHERE kind = ?1 ORDER BY key"),
            None => format!("{SELECT_RECORD} ORDER BY key"),
        };
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let mut rows = match kind {
            Some(k) => stmt.query([k.as_str()]),
            None => stmt.query([]),
        }
        .map_err(self.err())?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(self.err())? {
            out.push(self.parse_record(r)?);
        }
        Ok(out)
    }

    fn parse_record(&self, r: &rusqlite::Row<'_>) -> Result<UnitRecord> {
        let get = |e| sql_err(&self.path, e);
        let key: String = r.get(0).map_err(get)?;
        let bad = |what: String| Error::Store {
            path: self.path.clone(),
            problem: format!("unit {key}: {what}"),
        };
        let spec_text: String = r.get(1).map_err(get)?;
        let spec: UnitSpec = serde_json::from_str(&spec_text)
            .map_err(|e| bad(format!("spec does not parse: {e}")))?;
        let status: String = r.get(2).map_err(get)?;
        let status = match status.as_str() {
            "done" => UnitStatus::Done,
            "failed" => UnitStatus::Failed,
            other => return Err(bad(format!("unknown status {other}"))),
        };
        let result: Option<String> = r.get(3).map_err(get)?;
        let result = match result {
            None => None,
            Some(t) => match serde_json::from_str::<Value>(&t) {
                Ok(Value::Object(m)) => Some(m),
                _ => return Err(bad("result is not a JSON object".into())),
            },
        };
        Ok(UnitRecord {
            key: UnitKey(key.clone()),
            spec,
            status,
            result,
            error: r.get(4).map_err(get)?,
            blob_sha256: r.get(5).map_err(get)?,
            elapsed_ms: r.get(6).map_err(get)?,
            finished_at: r.get(7).map_err(get)?,
        })
    }

    /// Number of units by status: (done, failed).
    pub fn counts(&self) -> Result<(usize, usize)> {
        let count = |s: &str| -> Result<usize> {
            self.conn
                .query_row("SELECT COUNT(*) FROM units WHERE status = ?1", [s], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|c| c as usize)
                .map_err(self.err())
        };
        Ok((count("done")?, count("failed")?))
    }

    /// SHA-256 over every unit's deterministic content (key, spec, status, result, error, blob hash)
    /// in key order, and over every blob's bytes: two databases with the same digest hold the same
    /// results. Provenance columns (elapsed_ms, finished_at) are left out.
    pub fn digest(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT u.key, u.spec, u.status, u.result, u.error, u.blob_sha256, b.data \
                 FROM units u LEFT JOIN blobs b ON b.key = u.key ORDER BY u.key",
            )
            .map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            for i in 0..6 {
                let v: Option<String> = r.get(i).map_err(self.err())?;
                match v {
                    None => h.update([0u8]),
                    Some(s) => {
                        h.update([1u8]);
                        h.update((s.len() as u64).to_le_bytes());
                        h.update(s.as_bytes());
                    }
                }
            }
            let data: Option<Vec<u8>> = r.get(6).map_err(self.err())?;
            let stored: Option<String> = r.get(5).map_err(self.err())?;
            if let Some(d) = &data {
                if stored.as_deref() != Some(sha256_hex(d).as_str()) {
                    return Err(Error::Store {
                        path: self.path.clone(),
                        problem: format!(
                            "blob of unit {} does not match its hash",
                            r.get::<_, String>(0).unwrap_or_default()
                        ),
                    });
                }
                h.update((d.len() as u64).to_le_bytes());
                h.update(d);
            }
        }
        Ok(crate::key::hex(&h.finalize()))
    }
}

const SELECT_RECORD: &str =
    "SELECT key, spec, status, result, error, blob_sha256, elapsed_ms, finished_at FROM units";

/// SQLite's error, with what it means for a results database and what to do where SQLite's own words
/// ("unable to open database file", "UNIQUE constraint failed: blobs.key") do not say it.
fn sql_err(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    let hint = match e.sqlite_error_code() {
        Some(C::CannotOpen) => Some(
            "cannot open or create the database file: check that its directory exists and is \
             writable (a read-only disk, a missing directory, or no permission)",
        ),
        Some(C::ReadOnly) => Some(
            "the database cannot be written (a read-only disk or file, or no permission on its \
             directory, where SQLite keeps its journal)",
        ),
        Some(C::DiskFull) => Some("the disk is full"),
        Some(C::ConstraintViolation) => Some(
            "the database contradicts its own schema (a result or blob stored twice or without its \
             unit): it was modified outside w2sg or is damaged; move it aside and run again (finished \
             units in shard databases can be merged back)",
        ),
        Some(C::DatabaseCorrupt | C::NotADatabase) => Some(
            "not a w2sg results database, or a damaged one; move it aside and run again",
        ),
        _ => None,
    };
    match hint {
        Some(hint) => Error::Store {
            path: path.to_path_buf(),
            problem: format!("{hint} (SQLite: {e})"),
        },
        None => Error::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

fn insert_unit(
    conn: &Connection,
    key: &UnitKey,
    spec: &UnitSpec,
    row: &Row,
    blob: Option<&[u8]>,
    elapsed_ms: i64,
    finished_at: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO units (key, kind, checkpoint, dataset, config, step, seed, loss, spec, status, \
         result, error, blob_sha256, elapsed_ms, finished_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            key.as_str(),
            spec.kind.as_str(),
            spec.checkpoint,
            spec.dataset,
            spec.config,
            spec.step.map(|s| s as i64),
            spec.seed.map(|s| s as i64),
            spec.loss,
            spec.canonical_json(),
            row.status.as_str(),
            row.result,
            row.error,
            row.blob_sha256,
            elapsed_ms,
            finished_at,
        ],
    )?;
    if let Some(b) = blob {
        conn.execute(
            "INSERT INTO blobs (key, data) VALUES (?1, ?2)",
            params![key.as_str(), b],
        )?;
    }
    Ok(())
}

/// Merges shard databases into `dest` (created if needed), all in one transaction: either every
/// source is merged or, on a conflict or error, nothing is.
pub fn merge(dest: impl AsRef<Path>, sources: &[PathBuf]) -> Result<MergeReport> {
    let mut store = Store::open(dest)?;
    let dest_path = store.path.clone();
    let derr = |e| sql_err(&dest_path, e);
    let mut report = MergeReport::default();
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(derr)?;
    for src in sources {
        let serr = |e| sql_err(src, e);
        let conn =
            Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(serr)?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(serr)?;
        if version.as_deref() != Some(&SCHEMA_VERSION.to_string()) {
            return Err(Error::Store {
                path: src.clone(),
                problem: format!(
                    "not a results database of schema version {SCHEMA_VERSION} (found {version:?})"
                ),
            });
        }
        let mut stmt = conn
            .prepare(
                "SELECT u.key, u.spec, u.status, u.result, u.error, u.blob_sha256, u.elapsed_ms, \
                 u.finished_at, b.data FROM units u LEFT JOIN blobs b ON b.key = u.key ORDER BY u.key",
            )
            .map_err(serr)?;
        let mut rows = stmt.query([]).map_err(serr)?;
        while let Some(r) = rows.next().map_err(serr)? {
            let key: String = r.get(0).map_err(serr)?;
            let spec_text: String = r.get(1).map_err(serr)?;
            let spec: UnitSpec = serde_json::from_str(&spec_text).map_err(|e| Error::Store {
                path: src.clone(),
                problem: format!("unit {key}: spec does not parse: {e}"),
            })?;
            if spec.key()?.0 != key {
                return Err(Error::Store {
                    path: src.clone(),
                    problem: format!("unit {key}: key is not the hash of its spec"),
                });
            }
            let status: String = r.get(2).map_err(serr)?;
            let row = Row {
                status: if status == "done" {
                    UnitStatus::Done
                } else {
                    UnitStatus::Failed
                },
                result: r.get(3).map_err(serr)?,
                error: r.get(4).map_err(serr)?,
                blob_sha256: r.get(5).map_err(serr)?,
            };
            let elapsed_ms: i64 = r.get(6).map_err(serr)?;
            let finished_at: i64 = r.get(7).map_err(serr)?;
            let blob: Option<Vec<u8>> = r.get(8).map_err(serr)?;
            if blob.as_deref().map(sha256_hex) != row.blob_sha256 {
                return Err(Error::Store {
                    path: src.clone(),
                    problem: format!("unit {key}: blob does not match its recorded hash"),
                });
            }
            let ukey = UnitKey(key.clone());
            match Store::row(&tx, &key).map_err(derr)? {
                None => {
                    insert_unit(
                        &tx,
                        &ukey,
                        &spec,
                        &row,
                        blob.as_deref(),
                        elapsed_ms,
                        finished_at,
                    )
                    .map_err(derr)?;
                    report.added += 1;
                }
                Some(existing) if existing.same_content(&row) => report.identical += 1,
                Some(existing) => match (existing.status, row.status) {
                    (UnitStatus::Done, UnitStatus::Done) => {
                        return Err(Error::MergeConflict {
                            dest: dest_path.clone(),
                            source_path: src.clone(),
                            key,
                            spec: spec_text,
                            problem: format!(
                                "different results: {} vs {}",
                                existing.result.unwrap_or_default(),
                                row.result.unwrap_or_default()
                            ),
                        });
                    }
                    (UnitStatus::Failed, UnitStatus::Done) => {
                        tx.execute("DELETE FROM units WHERE key = ?1", [key.as_str()])
                            .map_err(derr)?;
                        insert_unit(
                            &tx,
                            &ukey,
                            &spec,
                            &row,
                            blob.as_deref(),
                            elapsed_ms,
                            finished_at,
                        )
                        .map_err(derr)?;
                        report.replaced_failed += 1;
                    }
                    _ => report.kept += 1,
                },
            }
        }
    }
    tx.commit().map_err(derr)?;
    Ok(report)
}

/// Little-endian bytes of an f32 slice (feature blobs).
pub fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The f32 values of a blob; `None` when its length is not a multiple of 4.
pub fn bytes_to_f32s(b: &[u8]) -> Option<Vec<f32>> {
    b.len().is_multiple_of(4).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// Little-endian bytes of an f64 slice (soft-label blobs).
pub fn f64s_to_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The f64 values of a blob; `None` when its length is not a multiple of 8.
pub fn bytes_to_f64s(b: &[u8]) -> Option<Vec<f64>> {
    b.len().is_multiple_of(8).then(|| {
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    })
}
