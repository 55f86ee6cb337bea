//! `w2sg sweep slurm`: a sweep as a Slurm job array plus a merge job.
//!
//! [`write_scripts`] writes `DIR/slurm/array.sbatch` (N tasks, task I runs
//! `w2sg sweep PLAN --out DIR --shard I/N --quiet`) and `DIR/slurm/merge.sbatch` (`w2sg sweep merge`),
//! with absolute paths to the binary, the plan and DIR, so the jobs run from any working directory.
//! [`submit`] submits both with `sbatch --parsable`, the merge with `--dependency=afterany:<array>`;
//! [`wait`] polls `squeue` until the merge has left the queue and then reads the exit status each job
//! wrote to `DIR/slurm/status/`.
//!
//! Why `afterany` and not `afterok`: a task whose checkpoint is corrupt records that unit as failed,
//! finishes every other unit and exits 1. With `afterok` Slurm would never start the merge, and the
//! results of all other checkpoints would sit unmerged. The merge therefore runs once every task has
//! ended, whatever its exit; [`wait`] reports the failed tasks (and their log files) and fails.
//! Re-submitting resumes: finished units are in the shard databases and are not run again.
//!
//! Why status files and not `sacct`: `sacct` needs Slurm's accounting database, which many small
//! clusters (and the test's one-node cluster) do not run, and `scontrol` forgets a job a few minutes
//! after it ends. A task killed by Slurm (time limit, cancel, node failure) writes no status file and
//! is reported as not finished.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Errors of the Slurm driver.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// A bad option (shard count, sbatch argument).
    #[error("{0}")]
    Input(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A Slurm command could not be run or failed.
    #[error("`{command}` failed: {problem}")]
    Command { command: String, problem: String },

    /// Jobs ended, and some failed: each entry names the job and its log file.
    #[error("{} Slurm job(s) failed:\n  {}", .0.len(), .0.join("\n  "))]
    JobsFailed(Vec<String>),
}

impl SlurmError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        SlurmError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// 2 for bad options, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SlurmError::Input(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, SlurmError>;

/// What the scripts run.
#[derive(Debug, Clone)]
pub struct SlurmJob {
    /// The `w2sg` binary the jobs run (the running one, for `w2sg sweep slurm`).
    pub binary: PathBuf,
    pub plan: PathBuf,
    pub out: PathBuf,
    /// Number of array tasks (shards).
    pub shards: usize,
    /// Extra `#SBATCH` options for both jobs (`--partition=gpu`, `--time=2:00:00`, …).
    pub sbatch_args: Vec<String>,
}

/// The files [`write_scripts`] wrote.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub dir: PathBuf,
    pub array: PathBuf,
    pub merge: PathBuf,
}

/// Submitted job ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub array: String,
    pub merge: String,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| SlurmError::io(p, e))
}

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quote_path(p: &Path) -> Result<String> {
    p.to_str()
        .map(quote)
        .ok_or_else(|| SlurmError::Input(format!("{}: path is not valid UTF-8", p.display())))
}

/// Checks one `--sbatch-arg`: a long option, on one line (it becomes an `#SBATCH` line). Options the
/// driver sets itself are refused, since a second value would silently break the array or the logs.
fn check_sbatch_arg(a: &str) -> Result<()> {
    if !a.starts_with('-') || a.contains('\n') || a.contains('\r') {
        return Err(SlurmError::Input(format!(
            "--sbatch-arg `{a}`: expected an sbatch option such as --partition=NAME or --time=1:00:00"
        )));
    }
    let name = a.split(['=', ' ']).next().unwrap_or(a);
    for own in [
        "--array",
        "-a",
        "--output",
        "-o",
        "--error",
        "-e",
        "--dependency",
        "-d",
        "--parsable",
        "--wrap",
    ] {
        if name == own {
            return Err(SlurmError::Input(format!(
                "--sbatch-arg `{a}`: {own} is set by `w2sg sweep slurm` itself"
            )));
        }
    }
    Ok(())
}

/// Where task `index`'s log goes, given the array job id.
pub fn task_log(out: &Path, array_id: &str, index: usize) -> PathBuf {
    out.join("slurm/logs")
        .join(format!("array-{array_id}-task-{index}.log"))
}

/// Where the merge job's log goes.
pub fn merge_log(out: &Path, merge_id: &str) -> PathBuf {
    out.join("slurm/logs").join(format!("merge-{merge_id}.log"))
}

/// Writes `OUT/slurm/array.sbatch` and `OUT/slurm/merge.sbatch` (atomically) and creates the log
/// and status directories.
pub fn write_scripts(job: &SlurmJob) -> Result<Scripts> {
    if job.shards == 0 {
        return Err(SlurmError::Input("--shards must be at least 1".into()));
    }
    for a in &job.sbatch_args {
        check_sbatch_arg(a)?;
    }
    let binary = absolute(&job.binary)?;
    let plan = absolute(&job.plan)?;
    let out = absolute(&job.out)?;
    let dir = out.join("slurm");
    for d in [dir.join("logs"), dir.join("status")] {
        std::fs::create_dir_all(&d).map_err(|e| SlurmError::io(&d, e))?;
    }
    let (bin_q, plan_q, out_q) = (quote_path(&binary)?, quote_path(&plan)?, quote_path(&out)?);
    let status_q = quote_path(&dir.join("status"))?;
    let logs = dir.join("logs");
    let logs = logs.to_str().expect("checked UTF-8 above");
    let name = plan
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("sweep")
        .replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "_",
        );
    let extra: String = job
        .sbatch_args
        .iter()
        .map(|a| format!("#SBATCH {a}\n"))
        .collect();
    let n = job.shards;
    // The exit status goes to a file so that `w2sg sweep slurm --wait` can report it without Slurm's
    // accounting database (see the module docs).
    let array = format!(
        "#!/bin/bash\n\
         # Written by `w2sg sweep slurm`: shard $SLURM_ARRAY_TASK_ID of {n} of the sweep.\n\
         # Re-submitting resumes: finished units are kept in {out}/shards.\n\
         #SBATCH --job-name=w2sg-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={logs}/array-%A-task-%a.log\n\
         {extra}\
         set -u\n\
         {bin_q} sweep {plan_q} --out {out_q} --shard \"$SLURM_ARRAY_TASK_ID/{n}\" --quiet\n\
         rc=$?\n\
         echo \"$rc\" > {status_q}/task-\"$SLURM_ARRAY_TASK_ID\".rc\n\
         exit \"$rc\"\n",
        out = out.display(),
        last = n - 1,
    );
    let merge = format!(
        "#!/bin/bash\n\
         # Written by `w2sg sweep slurm`: merges the {n} shards into {out}/results.sqlite and writes\n\
         # the outputs. Submit it after the array with --dependency=afterany:<array job id>.\n\
         #SBATCH --job-name=w2sg-{name}-merge\n\
         #SBATCH --output={logs}/merge-%j.log\n\
         {extra}\
         set -u\n\
         {bin_q} sweep merge {plan_q} --out {out_q}\n\
         rc=$?\n\
         echo \"$rc\" > {status_q}/merge.rc\n\
         exit \"$rc\"\n",
        out = out.display(),
    );
    let scripts = Scripts {
        array: dir.join("array.sbatch"),
        merge: dir.join("merge.sbatch"),
        dir,
    };
    for (path, text) in [(&scripts.array, &array), (&scripts.merge, &merge)] {
        w2sg_fsio::write_atomic(path, text.as_bytes()).map_err(|source| SlurmError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(scripts)
}

fn run_tool(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let o = cmd.output().map_err(|e| SlurmError::Command {
        command: shown.clone(),
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            "not found on PATH (is this a Slurm login node?)".into()
        } else {
            e.to_string()
        },
    })?;
    if !o.status.success() {
        return Err(SlurmError::Command {
            command: shown,
            problem: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The job id in `sbatch --parsable` output (`ID` or `ID;CLUSTER`).
fn parse_job_id(s: &str) -> Option<String> {
    let id = s.lines().last()?.split(';').next()?.trim();
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

/// Submits the array, then the merge depending on it. Clears old status files first, so that
/// [`wait`] reads only this submission's.
pub fn submit(scripts: &Scripts) -> Result<Submitted> {
    let status = scripts.dir.join("status");
    if status.is_dir() {
        for e in std::fs::read_dir(&status).map_err(|e| SlurmError::io(&status, e))? {
            let p = e.map_err(|e| SlurmError::io(&status, e))?.path();
            if p.extension().is_some_and(|x| x == "rc") {
                std::fs::remove_file(&p).map_err(|e| SlurmError::io(&p, e))?;
            }
        }
    }
    let id = |out: String, what: &str| {
        parse_job_id(&out).ok_or_else(|| SlurmError::Command {
            command: format!("sbatch {what}"),
            problem: format!("no job id in its output `{out}`"),
        })
    };
    let array = id(
        run_tool(Command::new("sbatch").arg("--parsable").arg(&scripts.array))?,
        "array.sbatch",
    )?;
    let merge = id(
        run_tool(
            Command::new("sbatch")
                .arg("--parsable")
                .arg(format!("--dependency=afterany:{array}"))
                .arg(&scripts.merge),
        )?,
        "merge.sbatch",
    )?;
    Ok(Submitted { array, merge })
}

/// Whether job `id` is still known to the queue (pending or running).
fn in_queue(id: &str) -> Result<bool> {
    let o = Command::new("squeue")
        .args(["-h", "-o", "%T", "-j", id])
        .output()
        .map_err(|e| SlurmError::Command {
            command: format!("squeue -j {id}"),
            problem: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        // A finished job is purged from the controller after MinJobAge; squeue then says so.
        if stderr.contains("Invalid job id") {
            return Ok(false);
        }
        return Err(SlurmError::Command {
            command: format!("squeue -j {id}"),
            problem: format!("{}: {}", o.status, stderr.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| !l.trim().is_empty()))
}

/// Waits until the merge job has left the queue (it runs after every task has ended), then checks
/// each task's and the merge's exit status. `poll` is the interval between `squeue` calls.
pub fn wait(job: &SlurmJob, ids: &Submitted, poll: Duration) -> Result<()> {
    let out = absolute(&job.out)?;
    let mut transient = 0;
    loop {
        match in_queue(&ids.merge) {
            Ok(true) => transient = 0,
            Ok(false) => break,
            // The controller may be briefly unreachable (restart, failover); give it a minute.
            Err(e) => {
                transient += 1;
                if transient * poll.as_secs().max(1) > 60 {
                    return Err(e);
                }
            }
        }
        std::thread::sleep(poll);
    }
    // The array may still hold tasks if the merge was cancelled on its own.
    while in_queue(&ids.array).unwrap_or(false) {
        std::thread::sleep(poll);
    }
    let status = out.join("slurm/status");
    let read = |name: &str| -> Option<i32> {
        std::fs::read_to_string(status.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    let mut failed = Vec::new();
    for i in 0..job.shards {
        let log = task_log(&out, &ids.array, i);
        match read(&format!("task-{i}.rc")) {
            Some(0) => {}
            Some(rc) => failed.push(format!(
                "task {i} (job {}_{i}) exited {rc}; log: {}",
                ids.array,
                log.display()
            )),
            None => failed.push(format!(
                "task {i} (job {}_{i}) did not finish (cancelled, timed out or killed); log: {}",
                ids.array,
                log.display()
            )),
        }
    }
    let log = merge_log(&out, &ids.merge);
    match read("merge.rc") {
        Some(0) => {}
        Some(rc) => failed.push(format!(
            "merge (job {}) exited {rc}; log: {}",
            ids.merge,
            log.display()
        )),
        None => failed.push(format!(
            "merge (job {}) did not finish (cancelled, timed out or killed); log: {}",
            ids.merge,
            log.display()
        )),
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(SlurmError::JobsFailed(failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_and_quoting() {
        assert_eq!(parse_job_id("1234\n").as_deref(), Some("1234"));
        assert_eq!(parse_job_id("77;cluster").as_deref(), Some("77"));
        assert_eq!(parse_job_id("Submitted batch job 5"), None);
        assert_eq!(quote("a'b c"), r"'a'\''b c'");
        assert!(check_sbatch_arg("--partition=gpu").is_ok());
        assert!(check_sbatch_arg("--gres=gpu:1").is_ok());
        assert!(check_sbatch_arg("partition=gpu").is_err());
        assert!(check_sbatch_arg("--array=0-3").is_err());
        assert!(check_sbatch_arg("--time=1\n#SBATCH --x").is_err());
    }

    #[test]
    fn scripts_run_every_shard_with_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let job = SlurmJob {
            binary: "/opt/w2sg/bin/w2sg".into(),
            plan: dir.path().join("my plan.toml"),
            out: dir.path().join("out"),
            shards: 4,
            sbatch_args: vec!["--partition=gpu".into(), "--time=2:00:00".into()],
        };
        let s = write_scripts(&job).unwrap();
        let array = std::fs::read_to_string(&s.array).unwrap();
        assert!(array.contains("#SBATCH --array=0-3\n"), "{array}");
        assert!(array.contains("#SBATCH --partition=gpu\n#SBATCH --time=2:00:00\n"));
        let plan = dir.path().join("my plan.toml");
        assert!(array.contains(&format!(
            "'/opt/w2sg/bin/w2sg' sweep '{}' --out '{}' --shard \"$SLURM_ARRAY_TASK_ID/4\" --quiet",
            plan.display(),
            dir.path().join("out").display()
        )));
        let merge = std::fs::read_to_string(&s.merge).unwrap();
        assert!(merge.contains("sweep merge"), "{merge}");
        assert!(!merge.contains("--array"));
        let bad = SlurmJob { shards: 0, ..job };
        assert_eq!(write_scripts(&bad).unwrap_err().exit_code(), 2);
    }
}
