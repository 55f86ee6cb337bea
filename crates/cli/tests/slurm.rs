//! `w2sg sweep slurm --submit --wait` on a real one-node Slurm cluster that the test starts: munged,
//! slurmctld and slurmd as child daemons with their own directories under a temp dir and free
//! ports, stopped by their pids when the test ends (also on failure, by a Drop guard).
//!
//! Checks: the sharded array plus merge gives the unsharded run's results.csv byte for byte; with a
//! corrupt checkpoint in one task's slice that task fails, the merge still records every other
//! checkpoint, and `--wait` exits 1 naming the failed task and its log file.
//!
//! Needs root and Debian's `slurm-wlm` and `munge` (installed here with apt-get if missing; `.ci/run`
//! installs them). Where they cannot be installed the test says so and skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use w2sg_sweep::testing::fixture;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("w2sg-slurm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Installs slurm-wlm and munge with apt-get when missing; Err says why Slurm is unavailable.
fn ensure_slurm() -> Result<(), String> {
    if !is_root() {
        return Err("starting munged, slurmctld and slurmd needs root".into());
    }
    let all = || {
        ["sbatch", "slurmctld", "slurmd", "munged"]
            .iter()
            .all(|t| have(t))
    };
    if all() {
        return Ok(());
    }
    if !have("apt-get") {
        return Err("slurm-wlm/munge are not installed and there is no apt-get".into());
    }
    let o = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() || !all() {
        return Err(format!(
            "apt-get install slurm-wlm munge failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A running one-node cluster; dropping it stops the daemons by pid.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        // munged refuses a socket directory that others cannot traverse.
        let munge = dir.join("munge");
        for d in [dir, &munge, &dir.join("state"), &dir.join("spool")] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let key = Path::new("/etc/munge/munge.key");
        if !key.exists() {
            sh(Command::new("sh").args([
                "-c",
                "mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null \
                 && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key",
            ]));
        }
        sh(Command::new("chown").arg("munge").arg(&munge));
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
        };
        let socket = munge.join("munge.socket");
        sh(Command::new("runuser")
            .args(["-u", "munge", "--", "munged"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
            .arg(format!(
                "--seed-file={}",
                munge.join("munged.seed").display()
            ))
            .arg(format!("--log-file={}", munge.join("munged.log").display())));
        let host = String::from_utf8(sh(Command::new("hostname").arg("-s")).stdout).unwrap();
        let host = host.trim();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let d = dir.display();
        let conf = format!(
            "ClusterName=w2sgtest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/munge\nAuthInfo=socket={socket}\n\
             SlurmctldPort={p1}\nSlurmdPort={p2}\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\nMpiDefault=none\n\
             NodeName={host} CPUs={cpus} RealMemory=2000 State=UNKNOWN\n\
             PartitionName=w2sg Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            socket = socket.display(),
            p1 = free_port(),
            p2 = free_port(),
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        sh(Command::new("slurmctld").arg("-f").arg(&cluster.conf));
        sh(Command::new("slurmd").arg("-f").arg(&cluster.conf));
        let start = Instant::now();
        loop {
            let o = cluster
                .cmd("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .unwrap();
            let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if state == "idle" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the node did not come up (state `{state}`); see {}/slurmctld.log and slurmd.log",
                d
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        cluster
    }

    /// A command that talks to this cluster.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid_file in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(pid_file)) {
                let pid = pid.trim().to_string();
                let _ = Command::new("kill").arg(&pid).status();
                // Give it a moment to exit, so the next daemon's shutdown does not race it.
                for _ in 0..50 {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

fn w2sg_slurm(c: &Cluster, plan: &Path, out: &Path) -> Output {
    c.cmd(env!("CARGO_BIN_EXE_w2sg"))
        .arg("sweep")
        .arg("slurm")
        .arg(plan)
        .arg("--out")
        .arg(out)
        .args([
            "--shards",
            "3",
            "--submit",
            "--wait",
            "--sbatch-arg=--time=20",
        ])
        .env("W2SG_SLURM_POLL_SECONDS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

#[test]
fn a_slurm_array_and_merge_equal_the_unsharded_run() {
    if let Err(why) = ensure_slurm() {
        eprintln!("SKIPPED: Slurm is not available here: {why}");
        return;
    }
    let root = scratch("all");
    let cluster = Cluster::start(&root.join("cluster"));
    let f = fixture(&root.join("fixture"));

    let whole = root.join("whole");
    let o = Command::new(env!("CARGO_BIN_EXE_w2sg"))
        .arg("sweep")
        .arg(&f.plan)
        .arg("--out")
        .arg(&whole)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let out = root.join("sharded");
    let o = w2sg_slurm(&cluster, &f.plan, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("array job ") && stdout.contains("merge job "),
        "{stdout}"
    );
    let array = std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap();
    assert!(array.contains("#SBATCH --array=0-2") && array.contains("#SBATCH --time=20"));
    for i in 0..3 {
        assert!(out.join(format!("shards/shard-{i}-of-3.sqlite")).is_file());
    }
    assert_eq!(
        std::fs::read(out.join("results.csv")).unwrap(),
        std::fs::read(whole.join("results.csv")).unwrap(),
        "results.csv of the Slurm run differs from the unsharded run"
    );

    // A corrupt checkpoint: its task fails, the merge records everything else, --wait exits 1.
    let weights = f.strong.join("step8/model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    let out = root.join("corrupt");
    let o = w2sg_slurm(&cluster, &f.plan, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 Slurm job(s) failed"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("exited 1; log: "))
        .unwrap_or_else(|| panic!("no failed task named: {stderr}"));
    let log = PathBuf::from(line.split("log: ").nth(1).unwrap().trim());
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("failed: ") && log_text.contains("model.safetensors"),
        "{log_text}"
    );
    let failures = std::fs::read_to_string(out.join("failures.csv")).unwrap();
    assert_eq!(failures.lines().count(), 2, "{failures}");
    assert!(failures.contains("model.safetensors"), "{failures}");
    let mut r = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let (rev, status) = (
        h.iter().position(|x| x == "revision").unwrap(),
        h.iter().position(|x| x == "status").unwrap(),
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len(),
        9 * 2,
        "every checkpoint is in the merged results"
    );
    for row in &rows {
        let want = if &row[rev] == "step8" { "failed" } else { "ok" };
        assert_eq!(&row[status], want, "{row:?}");
    }
    drop(cluster);
}
