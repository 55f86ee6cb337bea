//! The checkpoint-lab reproduction end to end on a micro setup (synthetic corpus and task, families
//! pre-trained in seconds): families, sweep, report and summary, and reuse on a second run.

use w2sg_lm::pretrain::presets::PretrainConfig;
use w2sg_reproduce::lm_lab::{lm_lab_with, LmOptions, LmSetup};
use w2sg_sweep::testing::{micro_config_text, write_corpus, write_task};

#[test]
fn the_checkpoint_lab_reproduction_runs_end_to_end_and_reuses_its_families() {
    let dir = std::env::temp_dir().join(format!("w2sg-lm-micro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let corpus = write_corpus(&dir.join("corpus"));
    let task = dir.join("task.jsonl");
    write_task(&task, 240);
    let config = |text: String| {
        PretrainConfig::from_toml_str(&format!("corpus = [\"{}\"]\n{text}", corpus.display()))
            .unwrap()
    };
    let setup = LmSetup {
        weak: config(micro_config_text(16, 1, 8, 100)),
        strong: config(micro_config_text(32, 2, 24, 4)),
        plan: format!(
            "name = \"micro\"\nseeds = [0, 1]\nlosses = [\"xent\"]\n\
             [[family]]\nname = \"strong\"\npath = \"../families/strong\"\n\
             [weak]\nmodel = \"../families/weak@step8\"\n\
             [[task]]\njsonl = \"{}\"\npooling = \"mean\"\n\
             [pgr]\nbootstrap = 100\n[transition.sigmoid]\nbootstrap = 10\n\
             [train]\nmode = [\"probe\", \"finetune\"]\n\
             [finetune]\nlayers = 1\nepochs = 1\nlr = 1e-3\nbatch_size = 16\nmax_tokens = 32\n\
             revisions = [\"step24\"]\nseeds = [0]\n",
            task.display()
        ),
    };
    let opts = LmOptions {
        quick: true,
        out: dir.join("out"),
        progress: Default::default(),
    };
    let first = lm_lab_with(&setup, &opts).unwrap();
    let html = std::fs::read_to_string(opts.out.join("report.html")).unwrap();
    assert!(
        html.contains("Checkpoint lab: the families"),
        "families section"
    );
    assert!(html.contains("Checkpoint sweep: micro"), "sweep section");
    assert!(
        html.matches("<img").count() >= 3,
        "loss curves and the sweep figure"
    );
    let headline = first.summary["headline"].as_array().unwrap();
    assert_eq!(headline.len(), 2, "one (task, loss) for each mode");
    let h = headline.iter().find(|h| h["mode"] == "probe").unwrap();
    assert_eq!(h["last_revision"], "step24");
    for k in ["acc_weak", "acc_w2s", "acc_ceiling"] {
        let v = h[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert!(opts.out.join("sweep/results.csv").is_file());
    // The probe/fine-tuning comparison shows results.csv's numbers for both modes.
    assert!(
        html.contains("Linear probe vs fine-tuning"),
        "comparison section"
    );
    let cmp = first.summary["probe_vs_finetune"].as_array().unwrap();
    assert_eq!(cmp.len(), 1, "one checkpoint × one loss fine-tuned");
    let c = &cmp[0];
    assert_eq!(c["revision"], "step24");
    assert_eq!(c["mode"], "finetune-last-1");
    assert_eq!(c["finetuned"]["n_seeds"], 1);
    let mut rdr = csv::Reader::from_path(opts.out.join("sweep/results.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut seen = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        if &rec[col("revision")] != "step24" || &rec[col("loss")] != "xent" {
            continue;
        }
        let which = if &rec[col("mode")] == "probe" {
            "probe"
        } else {
            "finetuned"
        };
        let w2s: f64 = rec[col("acc_w2s")].parse().unwrap();
        assert!((c[which]["acc_w2s"].as_f64().unwrap() - w2s).abs() < 1e-12);
        let weak: f64 = rec[col("acc_weak")].parse().unwrap();
        assert!((c[which]["acc_weak"].as_f64().unwrap() - weak).abs() < 1e-12);
        assert_eq!(
            c[which]["n_seeds"].as_u64().unwrap().to_string(),
            &rec[col("n_seeds")]
        );
        seen += 1;
    }
    assert_eq!(seen, 2);
    assert!(opts
        .out
        .join("families/strong/step24/model.safetensors")
        .is_file());

    // A second run reuses the finished families and the finished sweep.
    let second = lm_lab_with(&setup, &opts).unwrap();
    for f in second.summary["families"].as_array().unwrap() {
        assert!(f["resumed_from"].is_u64(), "{f}");
    }
    assert_eq!(second.summary["headline"], first.summary["headline"]);
}
