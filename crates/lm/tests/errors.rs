//! Bad checkpoints give clear errors naming the file (and the tensor), never a panic.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use common::{copy_dir, fixtures};
use w2sg_lm::checkpoint::{read_safetensors, write_safetensors};
use w2sg_lm::model::Model;
use w2sg_lm::LmError;

const FIXTURE: &str = "neox-parallel-rot25";

fn load(dir: &std::path::Path) -> LmError {
    Model::load(dir, DType::F32, &Device::Cpu).expect_err("loading must fail")
}

#[test]
fn missing_config_json_names_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    copy_dir(&fixtures().join(FIXTURE), &dir);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load(&dir);
    assert!(matches!(err, LmError::MissingConfig { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.display().to_string()) && msg.contains("config.json"),
        "{msg}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn tensor_with_wrong_shape_names_file_tensor_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    copy_dir(&fixtures().join(FIXTURE), &dir);
    let path = dir.join("model.safetensors");
    let mut tensors = read_safetensors(&path).unwrap();
    let name = "gpt_neox.layers.1.mlp.dense_h_to_4h.weight";
    tensors.insert(
        name.into(),
        Tensor::zeros((64, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    let list: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    write_safetensors(&path, &list, &BTreeMap::new()).unwrap();
    let err = load(&dir);
    assert!(matches!(err, LmError::ShapeMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains(name) && msg.contains("[64, 32]") && msg.contains("[128, 32]"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors_names_file_and_first_missing_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    copy_dir(&fixtures().join(FIXTURE), &dir);
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let cut = bytes.len() * 2 / 3;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let err = load(&dir);
    let LmError::Truncated {
        tensor,
        size,
        needed,
        ..
    } = &err
    else {
        panic!("expected Truncated, got {err:?}")
    };
    assert_eq!(*size as usize, cut);
    assert!(*needed as usize > cut);
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(tensor.as_str()),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");

    // Cut inside the header: still an error naming the file.
    std::fs::write(&path, &bytes[..20]).unwrap();
    let msg = load(&dir).to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn unknown_model_type_names_config_and_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    copy_dir(&fixtures().join(FIXTURE), &dir);
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["model_type"] = "mamba".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let err = load(&dir);
    assert!(matches!(err, LmError::UnknownModelType { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("\"mamba\""),
        "{msg}"
    );

    // A missing required key is named too.
    config["model_type"] = "gpt_neox".into();
    config.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, config.to_string()).unwrap();
    let msg = load(&dir).to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("hidden_size"),
        "{msg}"
    );
}

/// Llama config values this crate does not implement are errors naming the key, in either rotary
/// spelling; so are missing parameters of a scaled rotary.
#[test]
fn llama_unsupported_config_values_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    copy_dir(&fixtures().join("llama-mha-untied-bf16"), &dir);
    let path = dir.join("config.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases: Vec<(Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
        (
            Box::new(|c| c["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0})),
            "`rope_scaling.rope_type` \"yarn\"",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("rope_scaling");
                c["rope_parameters"] = serde_json::json!({"rope_type": "dynamic", "factor": 2.0});
            }),
            "`rope_parameters.rope_type` \"dynamic\"",
        ),
        (
            Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0})
            }),
            "`rope_scaling.high_freq_factor`",
        ),
        (
            Box::new(|c| c["rope_scaling"] = serde_json::json!({"type": "linear"})),
            "`rope_scaling.factor`",
        ),
        (
            Box::new(|c| c["sliding_window"] = 4096.into()),
            "`sliding_window`",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("rope_scaling");
                c["rope_parameters"] = serde_json::json!({"partial_rotary_factor": 0.5});
            }),
            "`partial_rotary_factor`",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("num_attention_heads");
            }),
            "num_attention_heads",
        ),
        (
            Box::new(|c| c["num_key_value_heads"] = 3.into()),
            "num_key_value_heads",
        ),
    ];
    for (edit, want) in cases {
        let mut config = original.clone();
        edit(&mut config);
        std::fs::write(&path, config.to_string()).unwrap();
        let msg = match w2sg_lm::config::ModelConfig::from_dir(&dir) {
            Ok(_) => panic!("{want}: the config was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(want),
            "want {want}: {msg}"
        );
    }
    // An explicit null and a disabled sliding window are fine, as in HF.
    let mut config = original.clone();
    config["sliding_window"] = 4096.into();
    config["use_sliding_window"] = false.into();
    config["rope_scaling"] = serde_json::Value::Null;
    std::fs::write(&path, config.to_string()).unwrap();
    w2sg_lm::config::ModelConfig::from_dir(&dir).unwrap();
}

/// Positions for the last layer must be one per sequence and inside the sequences: an input error
/// naming the request's field, never a panic in the gather.
#[test]
fn last_layer_positions_out_of_range_or_miscounted_are_input_errors() {
    use w2sg_lm::model::Request;
    let model = Model::load(&fixtures().join(FIXTURE), DType::F32, &Device::Cpu).unwrap();
    let ids = Tensor::new(&[[5u32, 6, 7], [8, 9, 10]], &Device::Cpu).unwrap();
    let l = model.num_layers();
    for (positions, says) in [
        (vec![2], "holds 1 positions for a batch of 2"),
        (vec![2, 3], "position 3 is outside sequences of 3 tokens"),
    ] {
        let err = model
            .forward(&ids, &Request::hidden_state(l).at_positions(positions))
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            matches!(err, LmError::Input(_))
                && msg.contains("last_layer_positions")
                && msg.contains(says),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
    }
    // A pass that stops below the last layer ignores them.
    let out = model
        .forward(&ids, &Request::hidden_state(l - 1).at_positions(vec![9, 9]))
        .unwrap();
    assert_eq!(out.hidden_state(l - 1).unwrap().dims()[1], 3);
}
