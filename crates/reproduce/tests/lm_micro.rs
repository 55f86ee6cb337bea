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
             [pgr]\nbootstrap = 100\n[transition.sigmoid]\nbootstrap = 10\n",
            task.display()
        ),
    };
    let opts = LmOptions {
        quick: true,
        out: dir.join("out"),
        progress: false,
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
    assert_eq!(headline.len(), 1);
    let h = &headline[0];
    assert_eq!(h["last_revision"], "step24");
    for k in ["acc_weak", "acc_w2s", "acc_ceiling"] {
        let v = h[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert!(opts.out.join("sweep/results.csv").is_file());
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
