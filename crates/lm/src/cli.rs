//! `w2sg lm …` subcommands. The binary (crates/cli) only forwards to [`run`].
//!
//! - `w2sg lm info PATH`: architecture, parameter count, weight format, tokenizer, the revisions found
//!   (a checkpoint, a family directory, a cache repository directory or `ORG/NAME` in the hub cache)
//!   in training order, and groups of revisions with identical weights.
//! - `w2sg lm features --model PATH[@REV] --data FILE.jsonl --out FILE`: one feature vector per JSONL
//!   record (its `text` field, or `--field`), as `.safetensors` or `.npy`, with a progress bar.
//! - `w2sg lm download ORG/NAME [--revisions all|a,b|every=N] [--include GLOB]...`: fetches revisions
//!   from the hub into the hub cache ([`crate::download`]).
//!
//! Exit codes: 0 success, 1 a failure while computing or writing, 2 bad input.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{LmError, Result};
use crate::features::{extract, FeatureOptions, Pooling};
use crate::hub::{resolve, HubCache};
use crate::model::Model;
use crate::output::{npy_sidecar, write_features, Format};
use crate::revisions::{
    duplicate_groups, family_source, fingerprints, list_revisions, FamilySource, Revision,
};

/// `w2sg lm` subcommands.
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
        } => return download_command(&repo, &revisions, include, cache_dir, quiet),
        LmCommand::Info {
            path,
            cache_dir,
            no_hash,
        } => {
            let cache = cache_dir.map(HubCache::new);
            info(&path, cache.as_ref(), !no_hash).map(|report| print!("{report}"))
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
            features_command(&FeaturesArgs {
                model: &model,
                data: &data,
                out: &out,
                field: &field,
                layer,
                pooling: &pooling,
                batch_size,
                max_batch_tokens,
                max_tokens,
                dtype: &dtype,
                device: &device,
                cache: cache.as_ref(),
            })
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

#[cfg(feature = "download")]
fn download_command(
    repo: &str,
    revisions: &str,
    include: Vec<String>,
    cache_dir: Option<PathBuf>,
    quiet: bool,
) -> u8 {
    use crate::download::{download, DownloadOptions, Hub};
    let run = || -> crate::download::Result<()> {
        let cache = match cache_dir.map(HubCache::new).or_else(HubCache::from_env) {
            Some(c) => c,
            None => {
                return Err(crate::download::DownloadError::Input(
                    "no hub cache: set HF_HUB_CACHE or HF_HOME, or pass --cache-dir".into(),
                ))
            }
        };
        let opts = DownloadOptions {
            revisions: revisions.parse()?,
            include,
            progress: !quiet,
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
fn download_command(_: &str, _: &str, _: Vec<String>, _: Option<PathBuf>, _: bool) -> u8 {
    eprintln!(
        "error: this build of w2sg has no hub downloads (rebuild with the `download` feature)"
    );
    2
}

/// Parses `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        _ => Err(LmError::Input(format!(
            "unknown dtype \"{s}\" (use f32, bf16 or f16)"
        ))),
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let cuda = |i: usize| {
        Device::new_cuda(i).map_err(|e| LmError::Input(format!("cannot use device {s}: {e}")))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda(i),
            None => Err(LmError::Input(format!(
                "unknown device \"{s}\" (use cpu, cuda or cuda:N)"
            ))),
        },
    }
}

/// The revisions, architecture and duplicates of a checkpoint or family, as printed by `lm info`.
#[derive(Debug, Clone)]
pub struct InfoReport {
    pub spec: String,
    pub source: FamilySource,
    pub revisions: Vec<Revision>,
    /// Revision whose files describe the architecture.
    pub described: String,
    pub config: ModelConfig,
    pub parameters: usize,
    pub weight_dtype: Option<String>,
    pub weight_format: String,
    pub tokenizer: Option<usize>,
    /// Per revision: weight fingerprint, or why there is none (None when hashing was skipped).
    pub fingerprints: Option<Vec<std::result::Result<String, String>>>,
    /// (fingerprint, revision names) with two or more names.
    pub duplicates: Vec<(String, Vec<String>)>,
}

/// Builds the `lm info` report; `hash` fingerprints every revision's weights to find duplicates.
pub fn info(spec: &str, cache: Option<&HubCache>, hash: bool) -> Result<InfoReport> {
    let source = family_source(spec, cache)?;
    let revisions = list_revisions(&source)?;
    if revisions.is_empty() {
        return Err(LmError::NotFound {
            spec: spec.into(),
            msg: "no revisions found (no refs in the cache)".into(),
        });
    }
    // Describe `main` if present, else the latest revision whose files are complete.
    let mut candidates: Vec<&Revision> = revisions.iter().filter(|r| r.name == "main").collect();
    candidates.extend(revisions.iter().rev().filter(|r| r.name != "main"));
    let mut first_err = None;
    let mut described = None;
    for r in candidates {
        match ModelConfig::from_dir(&r.dir).and_then(|c| Ok((c, Checkpoint::open(&r.dir)?))) {
            Ok((config, ck)) => {
                described = Some((r, config, ck));
                break;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some((rev, config, ck)) = described else {
        return Err(first_err.expect("at least one revision was tried"));
    };
    let tokenizer = tokenizers::Tokenizer::from_file(rev.dir.join("tokenizer.json"))
        .ok()
        .map(|t| t.get_vocab_size(true));
    let (fps, duplicates) = if hash && revisions.len() > 1 {
        let bar = progress_bar(revisions.len() as u64, "hashing weights");
        let fps = fingerprints(&revisions, &mut |i| bar.set_position(i as u64));
        bar.finish_and_clear();
        let dups = duplicate_groups(&revisions, &fps);
        (
            Some(
                fps.into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
            ),
            dups,
        )
    } else {
        (None, Vec::new())
    };
    Ok(InfoReport {
        spec: spec.into(),
        source,
        described: rev.name.clone(),
        parameters: ck.num_parameters(),
        weight_dtype: ck.dominant_dtype(),
        weight_format: ck.format().name().into(),
        config,
        tokenizer,
        revisions,
        fingerprints: fps,
        duplicates,
    })
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn tokens_str(t: u64) -> String {
    if t >= 1_000_000_000 && t % 1_000_000_000 == 0 {
        format!("{}B", thousands(t / 1_000_000_000))
    } else {
        thousands(t)
    }
}

impl std::fmt::Display for InfoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            FamilySource::Checkpoint(d) => format!("checkpoint directory {}", d.display()),
            FamilySource::Directory(d) => format!("family directory {}", d.display()),
            FamilySource::Cache(d) => format!("hub cache repository {}", d.display()),
        };
        writeln!(f, "model: {}", self.spec)?;
        writeln!(f, "source: {source}")?;
        writeln!(
            f,
            "architecture ({}): {}",
            self.described,
            self.config.describe()
        )?;
        writeln!(
            f,
            "parameters: {} ({}, {})",
            thousands(self.parameters as u64),
            self.weight_dtype.as_deref().unwrap_or("?"),
            self.weight_format
        )?;
        match self.tokenizer {
            Some(v) => writeln!(
                f,
                "tokenizer: tokenizer.json, {} tokens",
                thousands(v as u64)
            )?,
            None => writeln!(f, "tokenizer: none (no readable tokenizer.json)")?,
        }
        writeln!(f, "revisions: {} (training order)", self.revisions.len())?;
        let width = self
            .revisions
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        for (i, r) in self.revisions.iter().enumerate() {
            let mut line = format!("  {:width$}", r.name);
            if let Some(s) = r.step {
                line.push_str(&format!("  step {}", thousands(s)));
            }
            if let Some(t) = r.tokens {
                line.push_str(&format!("  tokens {}", tokens_str(t)));
            }
            if let Some(c) = &r.commit {
                line.push_str(&format!("  commit {}", &c[..c.len().min(10)]));
            }
            if let Some(fps) = &self.fingerprints {
                match &fps[i] {
                    Ok(fp) => line.push_str(&format!("  weights {}", &fp[..12])),
                    Err(e) => line.push_str(&format!("  weights unreadable: {e}")),
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        match (&self.fingerprints, self.duplicates.is_empty()) {
            (None, _) if self.revisions.len() > 1 => {
                writeln!(f, "duplicates: not checked (--no-hash)")?
            }
            (None, _) => {}
            (Some(_), true) => writeln!(f, "duplicates: none")?,
            (Some(_), false) => {
                writeln!(
                    f,
                    "duplicates: {} group(s) of revisions with identical weights",
                    self.duplicates.len()
                )?;
                for (fp, names) in &self.duplicates {
                    writeln!(f, "  {}  (weights {})", names.join(" = "), &fp[..12])?;
                }
            }
        }
        Ok(())
    }
}

fn progress_bar(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar.set_message(msg);
    bar
}

struct FeaturesArgs<'a> {
    model: &'a str,
    data: &'a Path,
    out: &'a Path,
    field: &'a str,
    layer: i64,
    pooling: &'a str,
    batch_size: usize,
    max_batch_tokens: usize,
    max_tokens: Option<usize>,
    dtype: &'a str,
    device: &'a str,
    cache: Option<&'a HubCache>,
}

/// Reads the `field` string of every record of a JSONL file (blank lines skipped), with its 1-based
/// line number.
pub fn read_jsonl_texts(path: &Path, field: &str) -> Result<Vec<(usize, String)>> {
    let file = std::fs::File::open(path).map_err(|e| LmError::io(path, e))?;
    let mut texts = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| LmError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let data_err = |msg: String| LmError::Data {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| data_err(format!("invalid JSON: {e}")))?;
        match value.get(field) {
            Some(serde_json::Value::String(s)) => texts.push((i + 1, s.clone())),
            Some(_) => return Err(data_err(format!("field `{field}` is not a string"))),
            None => return Err(data_err(format!("no field `{field}`"))),
        }
    }
    if texts.is_empty() {
        return Err(LmError::Data {
            path: path.to_path_buf(),
            line: 0,
            msg: "no records".into(),
        });
    }
    Ok(texts)
}

fn features_command(a: &FeaturesArgs) -> Result<()> {
    let start = Instant::now();
    Format::from_path(a.out)?;
    let pooling: Pooling = a.pooling.parse()?;
    let dtype = parse_dtype(a.dtype)?;
    let device = parse_device(a.device)?;
    let texts = read_jsonl_texts(a.data, a.field)?;
    let resolved = resolve(a.model, a.cache)?;
    let tok_path = resolved.dir.join("tokenizer.json");
    let tokenizer =
        tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| LmError::Tokenizer {
            path: tok_path.clone(),
            msg: e.to_string(),
        })?;
    let model = Model::load(&resolved.dir, dtype, &device)?;
    let opts = FeatureOptions {
        layer: a.layer,
        pooling,
        batch_size: a.batch_size,
        max_batch_tokens: a.max_batch_tokens,
        max_tokens: a.max_tokens,
    };
    let refs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
    let bar = progress_bar(refs.len() as u64, "features");
    let features = extract(&model, &tokenizer, &refs, &opts, &mut |done| {
        bar.set_position(done as u64)
    })
    .map_err(|e| match e {
        LmError::EmptyText { index } => LmError::Data {
            path: a.data.to_path_buf(),
            line: texts[index].0,
            msg: format!("field `{}` has no tokens (empty text)", a.field),
        },
        other => other,
    })?;
    bar.finish_and_clear();
    let mut meta = BTreeMap::new();
    meta.insert("model".to_string(), a.model.to_string());
    meta.insert("model_dir".to_string(), resolved.dir.display().to_string());
    if let Some(rev) = &resolved.revision {
        meta.insert("revision".to_string(), rev.clone());
    }
    meta.insert("data".to_string(), a.data.display().to_string());
    meta.insert("field".to_string(), a.field.to_string());
    meta.insert("dtype".to_string(), a.dtype.to_string());
    meta.insert(
        "w2sg_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    write_features(a.out, &features, &meta)?;
    let n = features.lengths.len();
    let tokens: usize = features.lengths.iter().sum();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({n} × {} features, layer {} of {}, {} pooling{}) in {secs:.1} s, {tokens} tokens",
        a.out.display(),
        model.hidden_size(),
        features.layer,
        model.num_layers(),
        pooling.name(),
        if Format::from_path(a.out)? == Format::Npy {
            format!("; metadata in {}", npy_sidecar(a.out).display())
        } else {
            String::new()
        },
    );
    let nt = features.num_truncated();
    if nt > 0 {
        eprintln!(
            "truncated {nt} of {n} examples to {} tokens (flagged in the output's `truncated`)",
            features.max_tokens
        );
    }
    Ok(())
}
