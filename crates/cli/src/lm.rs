//! `w2sg lm …`: inspect checkpoints, extract features, download revisions.
//!
//! - `w2sg lm info PATH`: architecture, parameter count, weight format, tokenizer, the revisions found
//!   (a checkpoint, a family directory, a cache repository directory or `ORG/NAME` in the hub cache)
//!   in training order, and groups of revisions with identical weights ([`w2sg_lm::info`]).
//! - `w2sg lm features --model PATH[@REV] --data FILE.jsonl --out FILE`: one feature vector per JSONL
//!   record (its `txt` field, or `--field`), as `.safetensors` or `.npy` ([`w2sg_lm::features_job`]).
//! - `w2sg lm download ORG/NAME [--revisions all|a,b|every=N] [--include GLOB]...`: fetches revisions
//!   from the hub into the hub cache (`w2sg_lm::download`).
//!
//! Exit codes: 0 success, 1 a failure while computing or writing, 2 bad input.

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;

use w2sg_lm::device::{parse_device, parse_dtype};
use w2sg_lm::error::{LmError, Result};
use w2sg_lm::features::FeatureOptions;
use w2sg_lm::features_job::{extract_to_file, FeaturesJob};
use w2sg_lm::hub::HubCache;
use w2sg_lm::output::{npy_sidecar, Format};

use crate::bars;

/// `w2sg lm` subcommands (pre-training is in [`crate::pretrain`]).
#[derive(Debug, Subcommand)]
pub enum LmCommand {
    /// Architecture, parameters, revisions (in training order) and duplicated weights of a checkpoint,
    /// a family directory, a hub-cache repository directory, or ORG/NAME in the hub cache.
    Info {
        /// Checkpoint directory, family directory, `models--ORG--NAME` directory, or ORG/NAME.
        path: String,
        /// Hub cache root (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Do not hash weights to find duplicated revisions.
        #[arg(long)]
        no_hash: bool,
    },
    /// Pooled hidden states of the texts of a JSONL file, one row per record.
    Features {
        #[arg(
            long,
            help = "PATH[@REV] (checkpoint, family or cache-repository directory) or ORG/NAME[@REV] in the hub cache"
        )]
        model: String,
        /// JSONL file, one object per line; blank lines are skipped.
        #[arg(long)]
        data: PathBuf,
        /// Output file: .safetensors (features, lengths, truncated, metadata) or .npy (+ .npy.json).
        #[arg(long)]
        out: PathBuf,
        /// The JSON field holding the text (`txt` in the openai/weak-to-strong format).
        #[arg(long, default_value = "txt")]
        field: String,
        /// Hidden-state index: 0 = embeddings … L = last layer after the final norm; negative from the end.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        layer: i64,
        /// `last` (last real token) or `mean` (over real tokens).
        #[arg(long, default_value = "last")]
        pooling: String,
        /// Most sequences per forward pass.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// Most padded tokens per forward pass (bounds activation memory).
        #[arg(long, default_value_t = 4096)]
        max_batch_tokens: usize,
        /// Truncate inputs to this many tokens (default: the model's context length).
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Compute dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Worker threads (default: all cores).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Hub cache root (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Download revisions from the hub ($HF_ENDPOINT, $HF_TOKEN) into the hub cache, in
    /// huggingface_hub's layout; partial downloads resume.
    Download {
        /// Repository id, ORG/NAME.
        repo: String,
        /// `all` (every branch), `every=N` (branches stepK with K a multiple of N), or a
        /// comma-separated list of branches or commits.
        #[arg(long, default_value = "main")]
        revisions: String,
        /// Only files matching this glob (repeatable; default: config, tokenizer and the weights).
        #[arg(long)]
        include: Vec<String>,
        /// Hub cache root (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// No per-revision lines on stderr.
        #[arg(long)]
        quiet: bool,
    },
}

/// Runs a subcommand, printing results to stdout and errors to stderr; returns the exit code.
pub fn run(cmd: LmCommand) -> u8 {
    let result = match cmd {
        LmCommand::Download {
            repo,
            revisions,
            include,
            cache_dir,
            quiet,
        } => return download(&repo, &revisions, include, cache_dir, quiet),
        LmCommand::Info {
            path,
            cache_dir,
            no_hash,
        } => {
            let cache = cache_dir.map(HubCache::new);
            let bar = bars::bar(true, 0, "revisions hashed");
            let report = w2sg_lm::info::info(&path, cache.as_ref(), !no_hash, &mut |i, n| {
                bar.set_length(n as u64);
                bar.set_position(i as u64);
            });
            bar.finish_and_clear();
            report.map(|r| print!("{r}"))
        }
        LmCommand::Features {
            model,
            data,
            out,
            field,
            layer,
            pooling,
            batch_size,
            max_batch_tokens,
            max_tokens,
            dtype,
            device,
            threads,
            cache_dir,
        } => {
            if threads > 0 {
                // candle's GEMM and rayon both read this; set before either starts.
                std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            }
            let cache = cache_dir.map(HubCache::new);
            (|| -> Result<()> {
                let job = FeaturesJob {
                    model,
                    data,
                    out,
                    field,
                    options: FeatureOptions {
                        layer,
                        pooling: pooling.parse()?,
                        batch_size,
                        max_batch_tokens,
                        max_tokens,
                    },
                    dtype: parse_dtype(&dtype)?,
                    device: parse_device(&device)?,
                };
                features(&job, cache.as_ref())
            })()
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn features(job: &FeaturesJob, cache: Option<&HubCache>) -> Result<()> {
    let start = Instant::now();
    // Refuse a second writer of the same file before the minutes of computing: exit 2, as `sim
    // run` and `lm pretrain` do (the run was never started); a lock that cannot be created is a
    // write failure (exit 1).
    let lock_path = lock_path_for(&job.out);
    let _lock = w2sg_fsio::DirLock::acquire(&lock_path).map_err(|e| match e {
        w2sg_fsio::LockError::Held { .. } => LmError::Input(format!("{}: {e}", job.out.display())),
        w2sg_fsio::LockError::Io { .. } => LmError::Write {
            path: job.out.clone(),
            source: std::io::Error::other(e.to_string()),
        },
    })?;
    let bar = bars::bar(true, 0, "examples");
    let s = extract_to_file(job, cache, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} × {} features, layer {} of {}, {} pooling{}) in {:.1} s, {} tokens",
        job.out.display(),
        s.examples,
        s.hidden_size,
        s.layer,
        s.num_layers,
        s.pooling.name(),
        if s.format == Format::Npy {
            format!("; metadata in {}", npy_sidecar(&job.out).display())
        } else {
            String::new()
        },
        start.elapsed().as_secs_f64(),
        s.tokens,
    );
    if s.truncated > 0 {
        eprintln!(
            "truncated {} of {} examples to {} tokens (flagged in the output's `truncated`)",
            s.truncated, s.examples, s.max_tokens
        );
    }
    Ok(())
}

/// `.NAME.w2sg-lock` beside the output file.
fn lock_path_for(out: &std::path::Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!(".{name}.w2sg-lock"))
}

#[cfg(feature = "download")]
fn download(
    repo: &str,
    revisions: &str,
    include: Vec<String>,
    cache_dir: Option<PathBuf>,
    quiet: bool,
) -> u8 {
    use w2sg_lm::download::{download, DownloadError, DownloadOptions, Hub};
    let run = || -> w2sg_lm::download::Result<()> {
        let Some(cache) = cache_dir.map(HubCache::new).or_else(HubCache::from_env) else {
            return Err(DownloadError::Input(
                "no hub cache: set HF_HUB_CACHE or HF_HOME, or pass --cache-dir".into(),
            ));
        };
        let opts = DownloadOptions {
            revisions: revisions.parse()?,
            include,
            progress: bars::Bars::reporter(false, !quiet),
        };
        for d in download(&Hub::from_env(), &cache, repo, &opts)? {
            println!("{}\t{}\t{}", d.revision, d.commit, d.snapshot.display());
        }
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(not(feature = "download"))]
fn download(_: &str, _: &str, _: Vec<String>, _: Option<PathBuf>, _: bool) -> u8 {
    eprintln!(
        "error: this build of w2sg has no hub downloads (rebuild with the `download` feature)"
    );
    2
}
