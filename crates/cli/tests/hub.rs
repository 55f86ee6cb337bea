//! `w2sg lm download` against a stand-in hub (crates/lm/tests/hub_server.py, Python's http.server on
//! 127.0.0.1, started and stopped here) serving the micro families of the sweep fixture.
//!
//! Checks: every revision lands in huggingface_hub's cache layout (refs, relative snapshot symlinks,
//! blobs named by sha256 or git blob id, contents equal to the served files); `lm info` and a sweep
//! then run offline from the cache, and the sweep's numbers equal those of a sweep on the local
//! family directories; a download killed half-way resumes with a Range request from where it
//! stopped; a token reaches the hub but not the host LFS files redirect to; bad revisions, files
//! and offline misses are errors naming them. Python's `huggingface_hub` (pip-installed if missing)
//! finds w2sg's files with `local_files_only=True`, and w2sg reads a cache that huggingface_hub
//! filled from the same server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use w2sg_sweep::testing::fixture;

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn python() -> Option<&'static str> {
    ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The stand-in hub; dropping it stops it.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, repos: &[(&str, &Path)], extra: &[&str]) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let port_file = dir.join("port");
        let log = dir.join("requests.jsonl");
        let mut c = Command::new(python().unwrap());
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/hub_server.py"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args(extra);
        for (id, path) in repos {
            c.arg("--repo").arg(format!("{id}={}", path.display()));
        }
        let child = c.spawn().unwrap();
        let start = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "hub server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server { child, port, log }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn w2sg(cache: &Path, endpoint: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_w2sg"));
    c.env("HF_HUB_CACHE", cache)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("RAYON_NUM_THREADS", "2");
    match endpoint {
        Some(e) => c.env("HF_ENDPOINT", e),
        None => c
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_ENDPOINT", "http://127.0.0.1:9"),
    };
    c
}

fn run(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `(branch, commit)` of the server's refs.
fn server_refs(s: &Server, repo: &str) -> Vec<(String, String)> {
    let o = run(Command::new(python().unwrap()).arg("-c").arg(format!(
        "import json,urllib.request;r=json.load(urllib.request.urlopen('{}/api/models/{repo}/refs'))\n\
         for b in r['branches']: print(b['name'], b['targetCommit'])",
        s.endpoint()
    )));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

/// Python with huggingface_hub importable, installing it with pip if needed.
fn huggingface_hub() -> Result<&'static str, String> {
    let py = python().ok_or("no python3")?;
    let ok = || {
        Command::new(py)
            .args(["-c", "import huggingface_hub"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok() {
        let _ = Command::new(py)
            .args(["-m", "pip", "install", "--quiet", "huggingface_hub"])
            .status();
    }
    if ok() {
        Ok(py)
    } else {
        Err("huggingface_hub cannot be imported or installed".into())
    }
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|x| x.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn download_share_the_cache_with_huggingface_hub_and_resume() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: no python3 to run the stand-in hub");
        return;
    };
    let root = scratch("all");
    let f = fixture(&root.join("fixture"));
    let server = Server::start(
        &root.join("server"),
        &[("test/strong", &f.strong), ("test/weak", &f.weak)],
        &["--page-size", "3"],
    );
    let ep = server.endpoint();
    let cache = root.join("cache");

    // All revisions of the strong family, one of the weak one.
    let o =
        run(w2sg(&cache, Some(&ep)).args(["lm", "download", "test/strong", "--revisions", "all"]));
    let refs = server_refs(&server, "test/strong");
    assert_eq!(refs.len(), 10, "9 steps and main: {refs:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 10);
    run(w2sg(&cache, Some(&ep)).args(["lm", "download", "test/weak", "--revisions", "step8"]));
    let repo = cache.join("models--test--strong");
    for (branch, commit) in &refs {
        assert_eq!(
            &std::fs::read_to_string(repo.join("refs").join(branch)).unwrap(),
            commit
        );
        let snap = repo.join("snapshots").join(commit);
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            let link = std::fs::read_link(snap.join(file)).unwrap();
            assert!(link.starts_with("../../blobs"), "{link:?}");
        }
        let served = f
            .strong
            .join(if branch == "main" { "step24" } else { branch });
        assert_eq!(
            std::fs::read(snap.join("model.safetensors")).unwrap(),
            std::fs::read(served.join("model.safetensors")).unwrap()
        );
        // An LFS blob is named by its sha256.
        let blob = std::fs::read_link(snap.join("model.safetensors")).unwrap();
        assert_eq!(
            blob.file_name().unwrap().to_str().unwrap(),
            sha256_hex(&served.join("model.safetensors"))
        );
    }
    // Only files needed, and the token went nowhere (none set).
    assert!(server.requests().iter().all(|r| r["auth"] == false));

    // A second download transfers nothing.
    let before = server.requests().len();
    let o = run(w2sg(&cache, Some(&ep)).args([
        "lm",
        "download",
        "test/strong",
        "--revisions",
        "every=4",
    ]));
    assert!(stderr(&o).contains("0.0 MB downloaded"), "{}", stderr(&o));
    assert!(server
        .requests()
        .iter()
        .skip(before)
        .all(|r| !r["path"].as_str().unwrap().contains("/resolve/")));

    // Offline: lm info and a sweep read the cache, with no hub reachable.
    let o = run(w2sg(&cache, None).args(["lm", "info", "test/strong"]));
    let info = String::from_utf8_lossy(&o.stdout);
    for r in ["step0", "step12", "step24", "main"] {
        assert!(info.contains(r), "{info}");
    }
    let plan = f.dir.join("hub-plan.toml");
    std::fs::write(
        &plan,
        w2sg_sweep::testing::PLAN
            .replace(
                "path = \"strong\"",
                "name = \"strong\"\npath = \"test/strong\"",
            )
            .replace("model = \"weak@step8\"", "model = \"test/weak@step8\""),
    )
    .unwrap();
    let hub_out = root.join("sweep-hub");
    run(w2sg(&cache, None)
        .arg("sweep")
        .arg(&plan)
        .arg("--out")
        .arg(&hub_out)
        .arg("--quiet"));
    let local_out = root.join("sweep-local");
    run(w2sg(&cache, None)
        .arg("sweep")
        .arg(&f.plan)
        .arg("--out")
        .arg(&local_out)
        .arg("--quiet"));
    let (a, b) = (
        csv_rows(&hub_out.join("results.csv")),
        csv_rows(&local_out.join("results.csv")),
    );
    assert_eq!(a.len(), 18);
    assert_eq!(
        a, b,
        "a sweep from the hub cache equals the sweep on the local directories"
    );

    // Errors that name what is missing.
    let o = w2sg(&cache, Some(&ep))
        .args(["lm", "download", "test/strong", "--revisions", "step999"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no revision `step999`"),
        "{}",
        stderr(&o)
    );
    let o = w2sg(&cache, Some(&ep))
        .args([
            "lm",
            "download",
            "test/strong",
            "--revisions",
            "step8",
            "--include",
            "*.gguf",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no file matches --include *.gguf"),
        "{}",
        stderr(&o)
    );
    let o = w2sg(&cache, Some(&ep))
        .args(["lm", "download", "test/nothing"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("test/nothing"), "{}", stderr(&o));
    let o = w2sg(&root.join("empty-cache"), None)
        .args(["lm", "download", "test/strong", "--revisions", "step8"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("HF_HUB_OFFLINE") && stderr(&o).contains("step8"),
        "{}",
        stderr(&o)
    );

    // huggingface_hub reads w2sg's cache offline, and w2sg reads huggingface_hub's.
    match huggingface_hub() {
        // .ci/run installs it, so CI always runs this part.
        Err(why) => eprintln!("SKIPPED the huggingface_hub part: {why}"),
        Ok(_) => {
            let (step8_commit, snap8) = {
                let c = &refs.iter().find(|(b, _)| b == "step8").unwrap().1;
                (c.clone(), repo.join("snapshots").join(c))
            };
            let o = run(Command::new(py)
                .env("HF_HUB_CACHE", &cache)
                .env("HF_HUB_OFFLINE", "1")
                .env("HF_ENDPOINT", "http://127.0.0.1:9")
                .arg("-c")
                .arg(
                    "from huggingface_hub import hf_hub_download, snapshot_download\n\
                     print(hf_hub_download('test/strong', 'model.safetensors', revision='step8', local_files_only=True))\n\
                     print(snapshot_download('test/strong', revision='step8', local_files_only=True))\n",
                ));
            let out = String::from_utf8_lossy(&o.stdout);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(
                Path::new(lines[0]),
                snap8.join("model.safetensors"),
                "{out}"
            );
            assert_eq!(Path::new(lines[1]), snap8, "{out}");
            assert!(lines[1].contains(&step8_commit));

            let py_cache = root.join("py-cache");
            run(Command::new(py)
                .env("HF_HUB_CACHE", &py_cache)
                .env("HF_ENDPOINT", &ep)
                .env_remove("HF_HUB_OFFLINE")
                .env_remove("HF_TOKEN")
                .arg("-c")
                .arg(
                    "from huggingface_hub import snapshot_download\n\
                     for r in ['step0', 'step8', 'step24']:\n\
                     \x20   snapshot_download('test/strong', revision=r)\n",
                ));
            let o = run(w2sg(&py_cache, None).args(["lm", "info", "test/strong"]));
            let info = String::from_utf8_lossy(&o.stdout);
            assert!(info.contains("step8") && info.contains("step24"), "{info}");
            // w2sg names blobs as huggingface_hub does: nothing to fetch again.
            let before = server.requests().len();
            let o = run(w2sg(&py_cache, Some(&ep)).args([
                "lm",
                "download",
                "test/strong",
                "--revisions",
                "step0,step8,step24",
            ]));
            assert!(stderr(&o).contains("0.0 MB downloaded"), "{}", stderr(&o));
            assert!(server
                .requests()
                .iter()
                .skip(before)
                .all(|r| !r["path"].as_str().unwrap().contains("/resolve/")));
            let features = |cache: &Path, out: &Path| {
                let data = root.join("texts.jsonl");
                std::fs::write(&data, "{\"txt\": \"the whale and the sea\"}\n").unwrap();
                run(w2sg(cache, None)
                    .args(["lm", "features", "--model", "test/strong@step8", "--data"])
                    .arg(&data)
                    .arg("--out")
                    .arg(out));
                std::fs::read(out).unwrap()
            };
            assert_eq!(
                features(&py_cache, &root.join("f-py.npy")),
                features(&cache, &root.join("f-w2sg.npy"))
            );
        }
    }
    drop(server);

    // A download killed half-way resumes where it stopped.
    let slow = Server::start(
        &root.join("slow"),
        &[("test/strong", &f.strong)],
        &["--slow", "30000"],
    );
    let resume_cache = root.join("resume-cache");
    let weights = f.strong.join("step24/model.safetensors");
    let size = std::fs::metadata(&weights).unwrap().len();
    assert!(size > 60_000, "the fixture's weights are {size} bytes");
    let mut child = w2sg(&resume_cache, Some(&slow.endpoint()))
        .args([
            "lm",
            "download",
            "test/strong",
            "--revisions",
            "step24",
            "--quiet",
        ])
        .spawn()
        .unwrap();
    let blobs = resume_cache.join("models--test--strong/blobs");
    let start = Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(&blobs).ok().and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "incomplete"))
        });
        if let Some(p) = found.filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 30_000)) {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no partial download appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download finished too early"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let had = std::fs::metadata(&partial).unwrap().len();
    assert!(had < size, "{had} of {size}");
    drop(slow);
    let fast = Server::start(&root.join("fast"), &[("test/strong", &f.strong)], &[]);
    run(w2sg(&resume_cache, Some(&fast.endpoint())).args([
        "lm",
        "download",
        "test/strong",
        "--revisions",
        "step24",
    ]));
    let ranges: Vec<u64> = fast
        .requests()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/lfs/"))
        .filter_map(|r| r["range"].as_str())
        .map(|r| {
            r.trim_start_matches("bytes=")
                .trim_end_matches('-')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ranges.len(),
        1,
        "one resumed LFS request: {:?}",
        fast.requests()
    );
    assert!(
        ranges[0] >= had.min(30_000) && ranges[0] <= had,
        "{ranges:?} vs {had}"
    );
    let snap = resume_cache.join("models--test--strong/snapshots");
    let commit =
        std::fs::read_to_string(resume_cache.join("models--test--strong/refs/step24")).unwrap();
    assert_eq!(
        std::fs::read(snap.join(&commit).join("model.safetensors")).unwrap(),
        std::fs::read(&weights).unwrap()
    );
    assert!(!partial.exists());

    // A token goes to the hub, never to the LFS host.
    let gated = Server::start(
        &root.join("gated"),
        &[("test/weak", &f.weak)],
        &["--token", "s3cret"],
    );
    let gated_cache = root.join("gated-cache");
    let o = w2sg(&gated_cache, Some(&gated.endpoint()))
        .args(["lm", "download", "test/weak", "--revisions", "step8"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("HF_TOKEN"), "{}", stderr(&o));
    run(w2sg(&gated_cache, Some(&gated.endpoint()))
        .env("HF_TOKEN", "s3cret")
        .args(["lm", "download", "test/weak", "--revisions", "step8"]));
    let reqs = gated.requests();
    assert!(reqs
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/lfs/"))
        .all(|r| r["auth"] == false && r["host"].as_str().unwrap().starts_with("localhost")));
    assert!(reqs
        .iter()
        .any(|r| r["path"].as_str().unwrap().starts_with("/lfs/")));
}

/// The plan of the fixture with its strong family taken from the hub as `test/strong` (and `extra`
/// keys on the family); the weak model stays the local directory.
fn hub_plan(f: &w2sg_sweep::testing::Fixture, file: &str, extra: &str) -> PathBuf {
    let path = f.dir.join(file);
    std::fs::write(
        &path,
        w2sg_sweep::testing::PLAN.replace(
            "path = \"strong\"",
            &format!("name = \"strong\"\npath = \"test/strong\"\n{extra}"),
        ),
    )
    .unwrap();
    path
}

fn sweep(cache: &Path, endpoint: Option<&str>, plan: &Path, out: &Path, extra: &[&str]) -> Output {
    w2sg(cache, endpoint)
        .arg("sweep")
        .arg(plan)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    o
}

/// The store's content digest and its unit keys.
fn store_identity(db: &Path) -> (String, Vec<String>) {
    let store = w2sg_protocol::Store::open(db).unwrap();
    let keys = store
        .records(None)
        .unwrap()
        .iter()
        .map(|r| r.key.as_str().to_string())
        .collect();
    (store.digest().unwrap(), keys)
}

/// Commits whose snapshot in `cache` holds weights.
fn with_weights(cache: &Path) -> std::collections::BTreeSet<String> {
    let snaps = cache.join("models--test--strong/snapshots");
    std::fs::read_dir(&snaps)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("model.safetensors").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn download_sweeps_fetch_weights_when_needed_and_release_them() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: no python3 to run the stand-in hub");
        return;
    };
    let root = scratch("sweep");
    let f = fixture(&root.join("fixture"));
    let server = Server::start(&root.join("server"), &[("test/strong", &f.strong)], &[]);
    let ep = server.endpoint();
    let stepped: std::collections::BTreeSet<String> = server_refs(&server, "test/strong")
        .into_iter()
        .filter(|(b, _)| b != "main")
        .map(|(_, c)| c)
        .collect();
    assert_eq!(stepped.len(), 9);
    let weight_shas: std::collections::BTreeSet<String> = std::fs::read_dir(&f.strong)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("model.safetensors"))
        .filter(|p| p.is_file())
        .map(|p| sha256_hex(&p))
        .collect();

    // The reference: a sweep over a cache filled beforehand by `lm download`, offline.
    let cache_ref = root.join("cache-ref");
    run(w2sg(&cache_ref, Some(&ep)).args(["lm", "download", "test/strong", "--revisions", "all"]));
    let plain = hub_plan(&f, "plain.toml", "");
    let ref_out = root.join("ref");
    ok(sweep(&cache_ref, None, &plain, &ref_out, &[]));
    let reference = csv_rows(&ref_out.join("results.csv"));
    assert_eq!(reference.len(), 18);
    let ref_store = store_identity(&ref_out.join("results.sqlite"));

    // download = true from an empty cache: the same results under the same unit keys.
    let dl = hub_plan(&f, "download.toml", "download = true");
    let cache_dl = root.join("cache-dl");
    let out = root.join("dl");
    ok(sweep(&cache_dl, Some(&ep), &dl, &out, &[]));
    assert_eq!(csv_rows(&out.join("results.csv")), reference);
    assert_eq!(store_identity(&out.join("results.sqlite")), ref_store);
    assert_eq!(with_weights(&cache_dl), stepped);

    // keep_weights = false: same results and keys; no weights of a finished revision stay; a rerun
    // (offline: it could not fetch them if it tried) runs nothing and writes the same results.
    let rel = hub_plan(&f, "release.toml", "download = true\nkeep_weights = false");
    let cache_rel = root.join("cache-rel");
    let out = root.join("rel");
    ok(sweep(&cache_rel, Some(&ep), &rel, &out, &[]));
    assert_eq!(csv_rows(&out.join("results.csv")), reference);
    assert_eq!(store_identity(&out.join("results.sqlite")), ref_store);
    let repo = cache_rel.join("models--test--strong");
    let blobs: Vec<String> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!blobs.is_empty());
    assert!(
        blobs.iter().all(|b| !weight_shas.contains(b)),
        "weight blobs left: {blobs:?}"
    );
    assert!(with_weights(&cache_rel).is_empty());
    for c in &stepped {
        assert!(repo.join("snapshots").join(c).join("config.json").is_file());
    }
    ok(sweep(&cache_rel, None, &rel, &out, &[]));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["report"]["units_done"], 0, "{report}");
    assert_eq!(report["report"]["units_failed"], 0, "{report}");
    assert_eq!(csv_rows(&out.join("results.csv")), reference);
    assert_eq!(store_identity(&out.join("results.sqlite")), ref_store);
    // The cache is still one huggingface_hub reads without complaint (no dangling link).
    if let Ok(py) = huggingface_hub() {
        let o = run(Command::new(py)
            .env("HF_HUB_CACHE", &cache_rel)
            .arg("-c")
            .arg(
                "from huggingface_hub import scan_cache_dir\n\
                 r = scan_cache_dir()\n\
                 print(len(r.warnings), len(r.repos))\n",
            ));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0 1");
    }

    // Shards: each fetches only its own revisions' weights; merged, the results are the same.
    let shard_out = root.join("shards");
    let mut fetched = Vec::new();
    for i in 0..2 {
        let cache = root.join(format!("cache-shard{i}"));
        ok(sweep(
            &cache,
            Some(&ep),
            &dl,
            &shard_out,
            &["--shard", &format!("{i}/2")],
        ));
        fetched.push(with_weights(&cache));
    }
    assert!(
        !fetched[0].is_empty() && !fetched[1].is_empty(),
        "{fetched:?}"
    );
    assert!(fetched[0].is_disjoint(&fetched[1]), "{fetched:?}");
    assert_eq!(&fetched[0] | &fetched[1], stepped);
    run(w2sg(&root.join("cache-shard0"), Some(&ep))
        .args(["sweep", "merge"])
        .arg(&dl)
        .arg("--out")
        .arg(&shard_out));
    assert_eq!(csv_rows(&shard_out.join("results.csv")), reference);

    // A server error on one revision's weights fails that revision; the rest complete; exit 1.
    let failing = Server::start(
        &root.join("failing"),
        &[("test/strong", &f.strong)],
        &["--fail-branch", "step12"],
    );
    let out = root.join("failed");
    let o = sweep(
        &root.join("cache-fail"),
        Some(&failing.endpoint()),
        &dl,
        &out,
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("step12"), "{}", stderr(&o));
    let rows = csv_rows(&out.join("results.csv"));
    assert_eq!(rows.len(), reference.len());
    let header = csv::Reader::from_path(out.join("results.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (revision, status, error) = (col("revision"), col("status"), col("error"));
    for (got, want) in rows.iter().zip(&reference) {
        if got[revision] == "step12" {
            assert_eq!(got[status], "failed", "{got:?}");
            assert!(got[error].contains("HTTP 500"), "{got:?}");
        } else {
            assert_eq!(got, want);
        }
    }
    drop(failing);

    // Offline with nothing cached: a clear error, before anything runs.
    let o = sweep(
        &root.join("cache-empty"),
        None,
        &dl,
        &root.join("offline"),
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("HF_HUB_OFFLINE") && stderr(&o).contains("test/strong"),
        "{}",
        stderr(&o)
    );
    // keep_weights = false on a directory of the user's own: a plan error, nothing deleted.
    let own = f.dir.join("own.toml");
    std::fs::write(
        &own,
        w2sg_sweep::testing::PLAN.replace(
            "path = \"strong\"",
            "path = \"strong\"\nkeep_weights = false",
        ),
    )
    .unwrap();
    let o = sweep(&cache_ref, None, &own, &root.join("own"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("keep_weights"), "{}", stderr(&o));
    assert!(f.strong.join("step12/model.safetensors").is_file());
    let _ = py;
}

/// `[weak] download = true`: a sweep whose weak model and strong family both come from the hub, from
/// an empty cache, gives the results of the same sweep on the local directories; a rerun offline
/// asks the hub for nothing; a revision the hub lacks and an empty cache offline are exit-2 errors
/// naming the weak model.
#[test]
fn a_weak_model_with_download_true_is_fetched_into_the_cache() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: no python3 to run the stand-in hub");
        return;
    };
    let root = scratch("weak-dl");
    let f = fixture(&root.join("fixture"));
    let server = Server::start(
        &root.join("server"),
        &[("test/strong", &f.strong), ("test/weak", &f.weak)],
        &[],
    );
    let ep = server.endpoint();
    let plan_for = |file: &str, weak: &str| {
        let path = f.dir.join(file);
        std::fs::write(
            &path,
            w2sg_sweep::testing::PLAN
                .replace(
                    "path = \"strong\"",
                    "name = \"strong\"\npath = \"test/strong\"\ndownload = true",
                )
                .replace(
                    "model = \"weak@step8\"",
                    &format!("model = \"{weak}\"\ndownload = true"),
                ),
        )
        .unwrap();
        path
    };
    let local_out = root.join("local");
    ok(sweep(
        &root.join("cache-local"),
        None,
        &f.plan,
        &local_out,
        &[],
    ));

    let plan = plan_for("weak-dl.toml", "test/weak@step8");
    let cache = root.join("cache");
    let out = root.join("hub");
    ok(sweep(&cache, Some(&ep), &plan, &out, &[]));
    assert_eq!(
        csv_rows(&out.join("results.csv")),
        csv_rows(&local_out.join("results.csv")),
        "the weak model from the hub is the local one"
    );
    let weak_ref = cache.join("models--test--weak/refs/step8");
    let commit = std::fs::read_to_string(&weak_ref).unwrap();
    let snapshot = cache
        .join("models--test--weak/snapshots")
        .join(commit.trim());
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        std::fs::read(f.weak.join("step8/model.safetensors")).unwrap()
    );
    // Already cached: offline, the rerun runs nothing and needs no hub.
    ok(sweep(&cache, None, &plan, &out, &[]));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(report["report"]["units_done"], 0, "{report}");

    // A revision the hub does not have; an empty cache offline: exit 2, naming the weak model.
    let missing = plan_for("weak-missing.toml", "test/weak@step999");
    let o = sweep(&cache, Some(&ep), &missing, &root.join("missing"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("test/weak@step999") && stderr(&o).contains("step999"),
        "{}",
        stderr(&o)
    );
    let o = sweep(
        &root.join("cache-empty"),
        None,
        &plan,
        &root.join("offline"),
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the weak model test/weak@step8"),
        "{}",
        stderr(&o)
    );
    let _ = py;
}
