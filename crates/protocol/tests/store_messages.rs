//! The results store's errors in words a user can act on (issue 14, section 2): a database that cannot
//! be created, a junk file, and a database tampered with outside w2sg, instead of SQLite's own
//! "unable to open database file" and "UNIQUE constraint failed: blobs.key".

use serde_json::{json, Map};
use w2sg_protocol::{RunPolicy, Store, UnitKind, UnitOutput, UnitSpec};

#[test]
fn a_database_that_cannot_be_created_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("no")
        .join("such")
        .join("dir")
        .join("r.sqlite");
    let e = Store::open(&path).unwrap_err().to_string();
    assert!(e.contains("r.sqlite"), "{e}");
    assert!(
        e.contains("cannot open or create") && e.contains("writable"),
        "{e}"
    );
}

#[test]
fn a_junk_file_is_named_as_not_a_results_database() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let e = Store::open(&junk).unwrap_err().to_string();
    assert!(
        e.contains("junk.sqlite") && e.contains("not a w2sg results database"),
        "{e}"
    );
}

#[test]
fn a_tampered_database_is_named_as_modified_outside_w2sg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite");
    let spec = UnitSpec::new(UnitKind::Features, "w", "d", "c").step(3);
    let output = || -> Result<UnitOutput, String> {
        Ok(UnitOutput {
            result: Map::from_iter([("n".to_string(), json!(1))]),
            blob: Some(vec![1, 2, 3, 4]),
        })
    };
    Store::open(&path)
        .unwrap()
        .run_unit(&spec, RunPolicy::default(), output)
        .unwrap();
    // Someone deletes the unit's row but not its blob.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM units;")
        .unwrap();
    drop(conn);
    let e = Store::open(&path)
        .unwrap()
        .run_unit(&spec, RunPolicy::default(), output)
        .unwrap_err()
        .to_string();
    assert!(e.contains("r.sqlite"), "{e}");
    assert!(e.contains("modified outside w2sg"), "{e}");
}
