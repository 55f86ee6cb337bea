//! Checkpoint sources and families: a fake Hugging Face hub cache with refs for several revisions, a
//! local family directory, revision order, and duplicated weights.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::DType;
use common::{assert_matches, copy_dir, fixtures, F32_TOL};
use sha2::{Digest, Sha256};
use w2sg_lm::checkpoint::{read_safetensors, write_safetensors};
use w2sg_lm::hub::{resolve, HubCache};
use w2sg_lm::revisions::{duplicate_groups, family_source, fingerprints, list_revisions};
use w2sg_lm::LmError;

const FIXTURE: &str = "neox-parallel-rot25";

/// The fixture's weights with the embedding scaled: a different "training step".
fn variant_weights(scale: f64, path: &Path) {
    let mut tensors =
        read_safetensors(&fixtures().join(FIXTURE).join("model.safetensors")).unwrap();
    let e = tensors.get_mut("gpt_neox.embed_in.weight").unwrap();
    *e = (&*e * scale).unwrap();
    let list: Vec<(&str, &candle_core::Tensor)> =
        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(path, &list, &meta).unwrap();
}

fn sha256_file(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn link(target: &Path, link: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, link).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(link.parent().unwrap().join(target), link).unwrap();
}

/// Builds `models--EleutherAI--pythia-tiny` the way huggingface_hub does: files in `blobs/` named by
/// sha256, snapshots of symlinks, refs holding commit hashes. Returns (cache root, commit per ref).
fn fake_cache(root: &Path) -> BTreeMap<&'static str, String> {
    let repo = root.join("models--EleutherAI--pythia-tiny");
    let blobs = repo.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let w0 = scratch.join("w0.safetensors");
    let w2 = scratch.join("w2.safetensors");
    variant_weights(0.5, &w0);
    variant_weights(2.0, &w2);
    let w1 = fixtures().join(FIXTURE).join("model.safetensors");
    let add_blob = |src: &Path| -> String {
        let sha = sha256_file(src);
        if !blobs.join(&sha).exists() {
            std::fs::copy(src, blobs.join(&sha)).unwrap();
        }
        sha
    };
    // step500 and step1000 are different commits serving the same weights blob; step143000 and main
    // are the same commit.
    let commits = [("a", &w0), ("d", &w1), ("b", &w1), ("c", &w2)];
    for (c, weights) in commits {
        let commit = c.repeat(40);
        let snap = repo.join("snapshots").join(&commit);
        std::fs::create_dir_all(&snap).unwrap();
        for (file, src) in [
            ("config.json", fixtures().join(FIXTURE).join("config.json")),
            (
                "tokenizer.json",
                fixtures().join(FIXTURE).join("tokenizer.json"),
            ),
            ("model.safetensors", weights.to_path_buf()),
        ] {
            let sha = add_blob(&src);
            link(&PathBuf::from("../../blobs").join(sha), &snap.join(file));
        }
    }
    let refs = BTreeMap::from([
        ("step0", "a".repeat(40)),
        ("step500", "d".repeat(40)),
        ("step1000", "b".repeat(40)),
        ("step143000", "c".repeat(40)),
        ("main", "c".repeat(40)),
    ]);
    for (name, commit) in &refs {
        std::fs::write(repo.join("refs").join(name), commit).unwrap();
    }
    std::fs::remove_dir_all(&scratch).unwrap();
    refs
}

#[test]
fn hub_cache_resolves_refs_and_commits_and_lists_revisions_in_step_order() {
    let tmp = tempfile::tempdir().unwrap();
    let refs = fake_cache(tmp.path());
    let cache = HubCache::new(tmp.path());
    let repo = tmp.path().join("models--EleutherAI--pythia-tiny");

    // A ref resolves to its snapshot, and the model loads through the blob symlinks.
    let r = resolve("EleutherAI/pythia-tiny@step1000", Some(&cache)).unwrap();
    assert_eq!(r.dir, repo.join("snapshots").join(&refs["step1000"]));
    assert_eq!(r.revision.as_deref(), Some("step1000"));
    assert_matches(&r.dir, FIXTURE, DType::F32, F32_TOL);
    // No revision means main; a full commit hash works as a revision; so does the repo directory.
    assert_eq!(
        resolve("EleutherAI/pythia-tiny", Some(&cache)).unwrap().dir,
        repo.join("snapshots").join(&refs["main"])
    );
    let by_commit = format!("EleutherAI/pythia-tiny@{}", refs["step0"]);
    assert_eq!(
        resolve(&by_commit, Some(&cache)).unwrap().dir,
        repo.join("snapshots").join(&refs["step0"])
    );
    let by_dir = format!("{}@step500", repo.display());
    assert_eq!(
        resolve(&by_dir, Some(&cache)).unwrap().dir,
        repo.join("snapshots").join(&refs["step500"])
    );

    // An unknown ref is an error that names it and lists what is cached.
    let err = resolve("EleutherAI/pythia-tiny@step7", Some(&cache)).unwrap_err();
    assert!(matches!(err, LmError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("step7") && msg.contains("step143000") && msg.contains("refs"),
        "{msg}"
    );
    assert!(resolve("EleutherAI/absent@main", Some(&cache)).is_err());

    // Revisions in training order (not the refs' alphabetical order), with their commits.
    let source = family_source("EleutherAI/pythia-tiny", Some(&cache)).unwrap();
    let revs = list_revisions(&source).unwrap();
    let names: Vec<&str> = revs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["step0", "step500", "step1000", "step143000", "main"]
    );
    assert_eq!(revs[2].step, Some(1000));
    assert_eq!(revs[4].step, None);
    assert_eq!(revs[1].commit.as_deref(), Some(refs["step500"].as_str()));
}

#[test]
fn duplicated_weights_are_detected_in_cache_and_family_directory() {
    // Hub cache: identical blobs under different commits, and two refs on one commit.
    let tmp = tempfile::tempdir().unwrap();
    fake_cache(tmp.path());
    let cache = HubCache::new(tmp.path());
    let source = family_source("EleutherAI/pythia-tiny", Some(&cache)).unwrap();
    let revs = list_revisions(&source).unwrap();
    let fps = fingerprints(&revs, &mut |_| {});
    let groups: Vec<Vec<String>> = duplicate_groups(&revs, &fps)
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    assert_eq!(
        groups,
        [vec!["step500", "step1000"], vec!["step143000", "main"]]
    );

    // The `lm info` report says so.
    let report = w2sg_lm::info::info("EleutherAI/pythia-tiny", Some(&cache), true, &mut |_, _| {})
        .unwrap()
        .to_string();
    assert!(
        report.contains("step500 = step1000") && report.contains("step143000 = main"),
        "{report}"
    );
    assert!(report.contains("GPT-NeoX: 2 layers"), "{report}");

    // A local family directory in OLMo's naming: plain copies, found by hashing their contents.
    let fam = tmp.path().join("olmo-like");
    for (name, weights) in [
        ("step1000-tokens4B", None),
        ("main", Some(2.0)),
        ("step0-tokens0B", Some(0.5)),
        ("step2000-tokens8B", None),
    ] {
        let dir = fam.join(name);
        copy_dir(&fixtures().join(FIXTURE), &dir);
        if let Some(scale) = weights {
            variant_weights(scale, &dir.join("model.safetensors"));
        }
    }
    let revs = list_revisions(&family_source(fam.to_str().unwrap(), None).unwrap()).unwrap();
    let names: Vec<&str> = revs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "step0-tokens0B",
            "step1000-tokens4B",
            "step2000-tokens8B",
            "main"
        ]
    );
    assert_eq!(
        (revs[2].step, revs[2].tokens),
        (Some(2000), Some(8_000_000_000))
    );
    let fps = fingerprints(&revs, &mut |_| {});
    let groups: Vec<Vec<String>> = duplicate_groups(&revs, &fps)
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    assert_eq!(groups, [vec!["step1000-tokens4B", "step2000-tokens8B"]]);
    // PATH@REV picks a revision of a family directory.
    let r = resolve(&format!("{}@step0-tokens0B", fam.display()), None).unwrap();
    assert_eq!(r.dir, fam.join("step0-tokens0B"));
}
