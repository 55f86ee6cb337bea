//! Outputs against HF `transformers` on the fixtures of `scripts/make_lm_fixtures.py`: every hidden
//! state and the logits of each tiny random model, run as one right-padded batch.
//!
//! Tolerances (relative to the largest reference value of each compared tensor): f32 1e-4 (Llama 1e-5);
//! bf16 5e-2.

mod common;

use candle_core::{DType, Device, IndexOp};
use common::{
    assert_matches, compare, copy_dir, fixtures, reference, rel_err, texts, BF16_TOL, F32_TOL,
};
use w2sg_lm::config::ModelConfig;
use w2sg_lm::features::{extract, FeatureOptions, Pooling};
use w2sg_lm::llama::LlamaVariant;
use w2sg_lm::model::Model;
use w2sg_lm::ops::RopeScaling;

/// Pythia's hub config.json (rotary_pct 0.25, rotary_emb_base), parallel residual, 4 heads, one
/// model.safetensors.
#[test]
fn gpt_neox_parallel_residual_quarter_rotary_matches_transformers() {
    let dir = fixtures().join("neox-parallel-rot25");
    let ModelConfig::GptNeoX(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("not GPT-NeoX")
    };
    assert!(c.use_parallel_residual && c.rotary_ndims() == 2 && c.num_attention_heads == 4);
    assert_matches(&dir, "neox-parallel-rot25", DType::F32, F32_TOL);
}

/// transformers-5 config.json (`rope_parameters`: partial_rotary_factor 1.0, rope_theta 1000),
/// sequential residual, 8 heads, sharded safetensors with model.safetensors.index.json.
#[test]
fn gpt_neox_sequential_full_rotary_sharded_matches_transformers() {
    let dir = fixtures().join("neox-sequential-rot100");
    assert!(
        dir.join("model.safetensors.index.json").is_file()
            && !dir.join("model.safetensors").exists()
    );
    let ModelConfig::GptNeoX(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("not GPT-NeoX")
    };
    assert!(!c.use_parallel_residual && c.rotary_pct == 1.0 && c.rope_theta == 1000.0);
    assert_matches(&dir, "neox-sequential-rot100", DType::F32, F32_TOL);
}

/// v0 Pythia config.json without use_parallel_residual (HF default: true), rotary_pct 0.5, 2 heads,
/// pytorch_model.bin holding the old attention-mask and inv_freq buffers.
#[test]
fn gpt_neox_v0_config_pytorch_bin_matches_transformers() {
    let dir = fixtures().join("neox-v0-bin");
    assert!(dir.join("pytorch_model.bin").is_file());
    let ModelConfig::GptNeoX(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("not GPT-NeoX")
    };
    assert!(
        c.use_parallel_residual,
        "missing use_parallel_residual must default to true"
    );
    assert_matches(&dir, "neox-v0-bin", DType::F32, F32_TOL);
}

/// OLMo 1 with HF-native names: non-parametric LayerNorm, SwiGLU, clip_qkv, tied embeddings.
#[test]
fn olmo_hf_layout_matches_transformers() {
    assert_matches(&fixtures().join("olmo-hf"), "olmo-hf", DType::F32, F32_TOL);
}

/// The same OLMo 1 weights in AI2's hf_olmo layout (fused att_proj and ff_proj, d_model config).
#[test]
fn olmo_ai2_layout_matches_transformers() {
    assert_matches(&fixtures().join("olmo-ai2"), "olmo-hf", DType::F32, F32_TOL);
}

/// OLMo 2: RMSNorm, q/k norms over all heads, post-norms, grouped-query attention, untied head.
#[test]
fn olmo2_matches_transformers() {
    assert_matches(&fixtures().join("olmo2"), "olmo2", DType::F32, F32_TOL);
}

/// The Llama fixtures are held to 1e-5 (f32 throughout, two layers, no clipping or post-norms).
const LLAMA_F32_TOL: f32 = 1e-5;

/// Llama: grouped-query attention (4 heads / 2 KV), `head_dim` 12 given (not hidden / heads), llama3
/// rope scaling in transformers 5's `rope_parameters` with all three frequency bands in use, tied
/// embeddings, f32 weights.
#[test]
fn llama_gqa_llama3_scaling_tied_matches_transformers() {
    let dir = fixtures().join("llama-gqa-llama3-tied");
    let ModelConfig::Llama(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("not Llama")
    };
    assert_eq!(c.variant, LlamaVariant::Llama);
    assert!(c.num_attention_heads == 4 && c.num_key_value_heads == 2 && c.head_dim == 12);
    assert!(c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0
        }
    );
    assert_matches(&dir, "llama-gqa-llama3-tied", DType::F32, LLAMA_F32_TOL);
}

/// Llama: multi-head attention, a transformers-4 config.json (top-level `rope_theta`, legacy
/// `rope_scaling` `{"type": "linear"}`, no `head_dim` or `num_key_value_heads`), q/k/v/o and MLP
/// biases, untied head, weights stored in bf16 and computed in f32.
#[test]
fn llama_mha_linear_scaling_biases_bf16_weights_matches_transformers() {
    let dir = fixtures().join("llama-mha-untied-bf16");
    let ModelConfig::Llama(c) = ModelConfig::from_dir(&dir).unwrap() else {
        panic!("not Llama")
    };
    assert!(c.num_key_value_heads == 4 && c.head_dim == 8 && c.rope_theta == 500.0);
    assert!(!c.tie_word_embeddings && c.attention_bias && c.mlp_bias && c.rms_norm_eps == 1e-6);
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    assert_matches(&dir, "llama-mha-untied-bf16", DType::F32, LLAMA_F32_TOL);
}

/// The rope scaling of each Llama fixture shows in its outputs: read without it (the config edited
/// to the default rotary), the model misses the reference by far more than the tolerance — so the
/// tests above would catch scaling that is ignored or wrong.
#[test]
fn llama_fixtures_fail_without_their_rope_scaling() {
    for (name, key) in [
        ("llama-gqa-llama3-tied", "rope_parameters"),
        ("llama-mha-untied-bf16", "rope_scaling"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        copy_dir(&fixtures().join(name), &dir);
        let path = dir.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let obj = config[key].as_object_mut().unwrap();
        obj.remove("type");
        obj.insert("rope_type".into(), "default".into());
        std::fs::write(&path, config.to_string()).unwrap();
        let e = compare(&dir, name, DType::F32);
        assert!(e.hidden > 100.0 * LLAMA_F32_TOL, "{name}: {e:?}");
    }
}

/// Every fixture computed in bf16 against the f32 reference.
#[test]
fn bf16_matches_transformers_within_bf16_tolerance() {
    for (dir, reference) in [
        ("neox-parallel-rot25", "neox-parallel-rot25"),
        ("neox-sequential-rot100", "neox-sequential-rot100"),
        ("neox-v0-bin", "neox-v0-bin"),
        ("olmo-hf", "olmo-hf"),
        ("olmo-ai2", "olmo-hf"),
        ("olmo2", "olmo2"),
        ("llama-gqa-llama3-tied", "llama-gqa-llama3-tied"),
        ("llama-mha-untied-bf16", "llama-mha-untied-bf16"),
    ] {
        assert_matches(&fixtures().join(dir), reference, DType::BF16, BF16_TOL);
    }
}

/// Every fixture through the composite candle ops that GPU builds run (the fused CPU ops switched
/// off), on the same CPU tensors: the fallback path computes what transformers computes too.
#[test]
fn composite_path_matches_transformers() {
    for (dir, reference) in [
        ("neox-parallel-rot25", "neox-parallel-rot25"),
        ("neox-sequential-rot100", "neox-sequential-rot100"),
        ("olmo-hf", "olmo-hf"),
        ("olmo-ai2", "olmo-hf"),
        ("olmo2", "olmo2"),
        ("llama-gqa-llama3-tied", "llama-gqa-llama3-tied"),
        ("llama-mha-untied-bf16", "llama-mha-untied-bf16"),
    ] {
        w2sg_lm::ops::with_composite_ops(|| {
            assert_matches(&fixtures().join(dir), reference, DType::F32, F32_TOL)
        });
    }
}

/// Features pool at the last real token found from the attention mask — text 1 ends with token id 0
/// (`<|endoftext|>`, a real token), and the batch is padded — and mean-pool over real tokens only.
/// Truncation keeps the first tokens (so the feature is the reference hidden state at the cut) and is
/// counted, never silent.
#[test]
fn features_pool_from_attention_mask_and_count_truncation() {
    let dir = fixtures().join("neox-parallel-rot25");
    let model = Model::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let r = reference("neox-parallel-rot25");
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let last_ids: Vec<i64> = r["ids.1"].to_vec1().unwrap();
    assert_eq!(
        *last_ids.last().unwrap(),
        0,
        "text 1 must end with token id 0"
    );

    for layer in [1i64, -1] {
        let l = if layer < 0 { 2 } else { layer as usize };
        for pooling in [Pooling::LastToken, Pooling::Mean] {
            let opts = FeatureOptions {
                layer,
                pooling,
                batch_size: 3,
                max_batch_tokens: 40,
                max_tokens: None,
            };
            let f = extract(&model, &tok, &refs, &opts, &mut |_| {}).unwrap();
            assert_eq!(f.values.dims(), &[texts.len(), 32]);
            assert_eq!(f.num_truncated(), 0);
            for j in 0..texts.len() {
                let h = r[&format!("hidden.{j}")].i(l).unwrap(); // (T, H)
                let want = match pooling {
                    Pooling::LastToken => h.i(h.dim(0).unwrap() - 1).unwrap(),
                    Pooling::Mean => h.mean(0).unwrap(),
                };
                let e = rel_err(&f.values.i(j).unwrap(), &want);
                assert!(
                    e <= F32_TOL,
                    "text {j}, layer {layer}, {pooling:?}: error {e:e}"
                );
            }
        }
    }

    let max_tokens = 5;
    let opts = FeatureOptions {
        layer: -1,
        pooling: Pooling::LastToken,
        batch_size: 2,
        max_batch_tokens: 4096,
        max_tokens: Some(max_tokens),
    };
    let f = extract(&model, &tok, &refs, &opts, &mut |_| {}).unwrap();
    let lens: Vec<usize> = (0..texts.len())
        .map(|j| r[&format!("ids.{j}")].dim(0).unwrap())
        .collect();
    assert_eq!(
        f.num_truncated(),
        lens.iter().filter(|&&n| n > max_tokens).count()
    );
    assert!(f.num_truncated() >= 2);
    for (j, &n) in lens.iter().enumerate() {
        assert_eq!(f.truncated[j], n > max_tokens);
        assert_eq!(f.lengths[j], n.min(max_tokens));
        let want = r[&format!("hidden.{j}")]
            .i((2, n.min(max_tokens) - 1))
            .unwrap();
        assert!(
            rel_err(&f.values.i(j).unwrap(), &want) <= F32_TOL,
            "truncated text {j}"
        );
    }
}
