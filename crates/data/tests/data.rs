//! Archive handling on synthetic files, and the real archives when a local copy of shared/ is present.

use std::io::Write;
use std::path::PathBuf;

use w2sg_data::archive::{sha256_hex, Archive, ArchiveStore, Registry, MOBY_DICK};
use w2sg_data::{corpus, tasks, DataError};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_wrong_checksum_is_a_clear_error_naming_the_file() {
    let dir = scratch("checksum");
    let path = dir.join(MOBY_DICK.file);
    std::fs::write(&path, b"not the real package").unwrap();
    let err = ArchiveStore::offline(vec![dir.clone()])
        .get(&MOBY_DICK)
        .unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string())
            && msg.contains(MOBY_DICK.sha256)
            && msg.contains(&sha256_hex(b"not the real package")),
        "{msg}"
    );
}

#[test]
fn a_missing_archive_without_fetching_says_where_it_looked() {
    let dir = scratch("missing");
    let err = ArchiveStore::offline(vec![dir.clone()])
        .get(&MOBY_DICK)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(MOBY_DICK.file) && err.contains(&dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_matching_archive_is_found_and_read() {
    // Build a tiny npm-style tarball, pin its hash, and read a document out of it.
    let dir = scratch("tarball");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let body = b"CHAPTER 1. Loomings.\n\nCall me Ishmael.\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "package/data/data.txt", &body[..])
        .unwrap();
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    let file = "fake-moby-0.0.1.tgz";
    std::fs::File::create(dir.join(file))
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let hash: &'static str = Box::leak(sha256_hex(&bytes).into_boxed_str());
    let fake = Archive {
        file,
        registry: Registry::Npm,
        package: "fake@0.0.1",
        sha256: hash,
        holds: "test",
    };
    let store = ArchiveStore::offline(vec![dir]);
    assert!(store.get(&fake).is_ok());
}

#[test]
fn malformed_jsonl_lines_are_reported_with_line_numbers() {
    let dir = scratch("jsonl");
    let path = dir.join("task.jsonl");
    std::fs::write(&path, "{\"txt\": \"good\", \"hard_label\": 1}\n{\"txt\": \"bad label\", \"hard_label\": 2}\n\nnot json\n{\"hard_label\": 0}\n{\"txt\": \"fine\", \"hard_label\": 0}\n").unwrap();
    let err = tasks::jsonl(&path).unwrap_err().to_string();
    assert!(
        err.contains("task.jsonl, line 2") && err.contains("hard_label"),
        "{err}"
    );
    assert!(err.contains("2 more malformed lines: 4, 5"), "{err}");
    std::fs::write(
        &path,
        "{\"txt\": \"good\", \"hard_label\": 1}\n{\"txt\": \"fine\", \"hard_label\": 0}\n",
    )
    .unwrap();
    let task = tasks::jsonl(&path).unwrap();
    assert_eq!(task.examples.len(), 2);
    assert_eq!(task.positives(), 1);
}

/// The real archives, when this machine has a copy of shared/ (never fetched in tests).
fn shared_store() -> Option<ArchiveStore> {
    let store = ArchiveStore::from_env();
    let dirs: Vec<PathBuf> = store
        .search
        .iter()
        .filter(|d| d.ends_with("shared/data/archives"))
        .cloned()
        .collect();
    (!dirs.is_empty()).then(|| ArchiveStore::offline(dirs))
}

#[test]
fn real_corpus_and_tasks_when_shared_data_is_present() {
    let Some(store) = shared_store() else {
        eprintln!("skipped: no shared/data/archives beside this checkout");
        return;
    };
    let docs = corpus::default_corpus(&store).unwrap();
    let sotu = docs.iter().filter(|d| d.source == "sotu").count();
    assert_eq!(sotu, 233, "State of the Union addresses");
    assert!(docs.iter().any(|d| d.name == "moby-dick/data"));
    assert!(
        !docs.iter().any(|d| d.name.ends_with("_gut_f")),
        "First Folio duplicates are left out"
    );
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    assert!(
        bytes > 15_000_000 && bytes < 30_000_000,
        "corpus size {bytes}"
    );
    let movies = tasks::vader(&store, tasks::VaderSet::MovieReviews, 0.5).unwrap();
    assert!(
        movies.examples.len() > 9_000 && movies.examples.len() < 10_605,
        "{}",
        movies.examples.len()
    );
    let spam = tasks::spam_assassin(&store).unwrap();
    assert_eq!(spam.examples.len(), 4150 + 1896);
    assert_eq!(spam.positives(), 1896);
    assert!(
        !spam.examples[0].text.starts_with("From "),
        "headers are dropped"
    );
}
