//! Epoch checkpoints of fine-tuning (`w2sg_lm::finetune::resume`): a run interrupted after an epoch
//! and resumed from its checkpoint ends with the bits of an uninterrupted run (evaluation logits, step
//! losses, trained tensors), for full fine-tuning, the last block (cached frozen outputs) and LoRA
//! (block recomputation); a checkpoint of another identity, other settings, cut short, or without
//! its optimizer moments is ignored or (the moments) changes the result, so the comparison can fail.

mod common;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::fixtures;
use w2sg_lm::checkpoint::{read_safetensors, read_safetensors_metadata, write_safetensors};
use w2sg_lm::features::Pooling;
use w2sg_lm::finetune::resume::read_header;
use w2sg_lm::finetune::{
    finetune_resumable, FinetuneConfig, Layers, Resume, ResumeReport, TargetRequest, Trace,
};

/// 30 short texts and soft labels.
fn data() -> (Vec<String>, Vec<f32>) {
    let words = ["good", "bad", "film", "plot", "dull", "bright", "story"];
    let mut rng = w2sg_data::SplitMix64::new(7);
    (0..30)
        .map(|i| {
            let n = 2 + (rng.next() % 5) as usize;
            let mut t: Vec<&str> = (0..n)
                .map(|_| words[(rng.next() % words.len() as u64) as usize])
                .collect();
            t.push(if i % 2 == 0 { "good" } else { "bad" });
            (t.join(" "), if i % 2 == 0 { 0.85 } else { 0.2 })
        })
        .unzip()
}

fn cfg(layers: Layers, lora_rank: usize) -> FinetuneConfig {
    FinetuneConfig {
        layers,
        lora_rank,
        lora_alpha: 8.0,
        epochs: 3,
        lr: 2e-3,
        batch_size: 4,
        grad_accumulation: 2,
        warmup_frac: 0.2,
        weight_decay: 0.01,
        max_tokens: 16,
        pooling: Pooling::LastToken,
        seed: 5,
    }
}

/// 30 texts in steps of 8: 4 steps per epoch.
const STEPS_PER_EPOCH: usize = 4;

/// What a run gives, as bits.
#[derive(Debug, PartialEq)]
struct Bits {
    eval: Vec<u32>,
    losses: Vec<u32>,
    trained: Vec<(String, Vec<u32>)>,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// How a run goes: with a checkpoint or not, and whether it stops (panics) after a step.
struct Go<'a> {
    cfg: &'a FinetuneConfig,
    checkpoint: Option<(&'a Path, &'a str)>,
    panic_after: Option<usize>,
    refuse_state: bool,
}

/// Runs fine-tuning on the `neox-parallel-rot25` fixture. The targets mix the soft labels with the
/// caller's running state (an exponential mean of the logits seen), so that a resumed run is also
/// right only if that state is restored. Returns the result (`None` if stopped), the resume report
/// and the steps run.
fn go(g: &Go<'_>) -> (Option<Bits>, ResumeReport, usize) {
    let dir = fixtures().join("neox-parallel-rot25");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let (texts, labels) = data();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let mean = Cell::new(0f64);
    let mut targets = |r: &TargetRequest<'_>| {
        let mut m = mean.get();
        for &z in r.logits {
            m = 0.9 * m + 0.1 * z as f64;
        }
        mean.set(m);
        let p = 1.0 / (1.0 + (-m).exp());
        r.indices
            .iter()
            .map(|&i| (0.8 * labels[i] as f64 + 0.2 * p) as f32)
            .collect::<Vec<f32>>()
    };
    let mut save = || mean.get().to_bits().to_le_bytes().to_vec();
    let refuse = g.refuse_state;
    let mut load = |b: &[u8]| -> Result<(), String> {
        if refuse {
            return Err("refused by the test".into());
        }
        let b: [u8; 8] = b.try_into().map_err(|_| "not 8 bytes".to_string())?;
        mean.set(f64::from_bits(u64::from_le_bytes(b)));
        Ok(())
    };
    let mut resume = g.checkpoint.map(|(path, identity)| Resume {
        path: path.to_path_buf(),
        identity: identity.to_string(),
        min_epoch_secs: 0.0,
        save_state: &mut save,
        load_state: &mut load,
        report: ResumeReport::default(),
    });
    let mut trace = Trace::default();
    let mut steps = 0;
    let out = catch_unwind(AssertUnwindSafe(|| {
        finetune_resumable(
            &dir,
            &tokenizer,
            &refs,
            &mut targets,
            &refs[..6],
            g.cfg,
            &Device::Cpu,
            &mut |step, _| {
                steps += 1;
                if g.panic_after == Some(step) {
                    panic!("stopped after step {step} (a kill)");
                }
            },
            Some(&mut trace),
            resume.as_mut(),
        )
        .unwrap()
    }));
    let report = resume.map(|r| r.report).unwrap_or_default();
    let result = out.ok().map(|o| Bits {
        eval: bits(&o.eval_logits),
        losses: bits(&o.step_losses),
        trained: trace
            .trained
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    bits(&t.flatten_all().unwrap().to_vec1().unwrap()),
                )
            })
            .collect(),
    });
    (result, report, steps)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("w2sg-ft-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs until the panic after step 6 (in epoch 2), leaving the checkpoint of epoch 1.
fn interrupted(cfg: &FinetuneConfig, path: &Path) {
    let (r, report, _) = go(&Go {
        cfg,
        checkpoint: Some((path, "unit-a")),
        panic_after: Some(STEPS_PER_EPOCH + 2),
        refuse_state: false,
    });
    assert!(r.is_none());
    assert_eq!(report.saved_after, vec![1]);
    let h = read_header(path).unwrap();
    assert_eq!(
        (h.epochs, h.step, h.identity.as_str()),
        (1, STEPS_PER_EPOCH, "unit-a")
    );
}

fn plain(cfg: &FinetuneConfig) -> Bits {
    go(&Go {
        cfg,
        checkpoint: None,
        panic_after: None,
        refuse_state: false,
    })
    .0
    .unwrap()
}

#[test]
fn resumed_after_an_epoch_gives_the_uninterrupted_bits() {
    for (name, c) in [
        ("all", cfg(Layers::All, 0)),
        ("last1", cfg(Layers::Last(1), 0)),
        ("lora", cfg(Layers::All, 4)),
    ] {
        let reference = plain(&c);
        assert_eq!(reference.losses.len(), 3 * STEPS_PER_EPOCH);
        let dir = scratch(name);
        let path = dir.join("unit.ft");

        // Uninterrupted with a checkpoint path: the same bits, checkpoints after epochs 1 and 2.
        let (r, report, steps) = go(&Go {
            cfg: &c,
            checkpoint: Some((&path, "unit-a")),
            panic_after: None,
            refuse_state: false,
        });
        assert_eq!(r.as_ref(), Some(&reference), "{name}: writing checkpoints");
        assert_eq!(report.saved_after, vec![1, 2], "{name}");
        assert_eq!((report.resumed_epochs, steps), (0, 3 * STEPS_PER_EPOCH));
        std::fs::remove_file(&path).unwrap();

        interrupted(&c, &path);
        let (r, report, steps) = go(&Go {
            cfg: &c,
            checkpoint: Some((&path, "unit-a")),
            panic_after: None,
            refuse_state: false,
        });
        assert_eq!(report.ignored, None, "{name}");
        assert_eq!(report.resumed_epochs, 1, "{name}");
        assert_eq!(
            steps,
            2 * STEPS_PER_EPOCH,
            "{name}: only epochs 2 and 3 run"
        );
        assert_eq!(report.saved_after, vec![2], "{name}");
        assert_eq!(r.as_ref(), Some(&reference), "{name}: resumed");
    }
}

/// The negative control: the same checkpoint with its AdamW moments zeroed (a resume that forgot
/// the optimizer state) loads, but the run ends with other bits.
#[test]
fn resuming_without_the_moments_gives_other_bits() {
    let c = cfg(Layers::All, 0);
    let reference = plain(&c);
    let path = scratch("moments").join("unit.ft");
    interrupted(&c, &path);
    let meta = read_safetensors_metadata(&path).unwrap();
    let tensors = read_safetensors(&path).unwrap();
    let zeroed: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| {
            let t = if n.starts_with("m.") || n.starts_with("v.") {
                t.zeros_like().unwrap()
            } else {
                t
            };
            (n, t)
        })
        .collect();
    let refs: Vec<(&str, &Tensor)> = zeroed.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_safetensors(&path, &refs, &meta).unwrap();
    let (r, report, _) = go(&Go {
        cfg: &c,
        checkpoint: Some((&path, "unit-a")),
        panic_after: None,
        refuse_state: false,
    });
    assert_eq!(report.resumed_epochs, 1);
    let r = r.unwrap();
    assert_eq!(
        r.losses[..STEPS_PER_EPOCH],
        reference.losses[..STEPS_PER_EPOCH]
    );
    assert_ne!(r.losses, reference.losses);
    assert_ne!(r.eval, reference.eval);
}

/// A checkpoint of another identity, of other settings, cut short, not a checkpoint at all, or
/// whose caller state the caller refuses, is ignored with a reason: the run trains from the start
/// and gives the uninterrupted bits.
#[test]
fn foreign_stale_or_corrupt_checkpoints_are_ignored() {
    let c = cfg(Layers::All, 0);
    let reference = plain(&c);
    let dir = scratch("ignored");
    let path = dir.join("unit.ft");
    interrupted(&c, &path);
    let saved = std::fs::read(&path).unwrap();
    let other_lr = FinetuneConfig {
        lr: 1e-3,
        ..c.clone()
    };
    let cases = [
        ("identity", &c, "unit-b", None, false, "made for"),
        (
            "settings",
            &other_lr,
            "unit-a",
            None,
            false,
            "other settings",
        ),
        (
            "truncated",
            &c,
            "unit-a",
            Some(saved[..saved.len() / 2].to_vec()),
            false,
            "truncated",
        ),
        (
            "header cut",
            &c,
            "unit-a",
            Some(saved[..5].to_vec()),
            false,
            "truncated",
        ),
        (
            "garbage",
            &c,
            "unit-a",
            Some(b"not a checkpoint at all".to_vec()),
            false,
            "safetensors",
        ),
        (
            "caller state",
            &c,
            "unit-a",
            None,
            true,
            "refused by the test",
        ),
    ];
    for (what, cf, identity, bytes, refuse, reason) in cases {
        std::fs::write(&path, bytes.as_deref().unwrap_or(&saved)).unwrap();
        let (r, report, steps) = go(&Go {
            cfg: cf,
            checkpoint: Some((&path, identity)),
            panic_after: None,
            refuse_state: refuse,
        });
        let why = report.ignored.clone().unwrap_or_default();
        assert!(why.contains(reason), "{what}: {why:?}");
        assert_eq!(report.resumed_epochs, 0, "{what}");
        assert_eq!(steps, 3 * STEPS_PER_EPOCH, "{what}");
        if std::ptr::eq(cf, &c) {
            assert_eq!(r.as_ref(), Some(&reference), "{what}");
        }
    }
}
