"""Reference fixtures for crates/lm: tiny random GPT-NeoX and OLMo checkpoints with HF outputs.

Each fixture is a checkpoint directory in Hugging Face layout (config.json, tokenizer.json, weights) plus
`reference.safetensors`, written by HF `transformers` on PyTorch CPU, holding for every input text j:

    ids.{j}     (T,)            int64  token ids from tokenizer.json (no special tokens added)
    hidden.{j}  (L+1, T, H)     f32    HF `output_hidden_states` (index 0: embeddings, L: after final norm)
    logits.{j}  (T, V)          f32    only for texts of at most 64 tokens (logits dominate the size)

The texts are run one at a time (batch 1, no padding), with the eager attention implementation. The Rust
tests run them batched and padded, so they also check that padding does not leak into real positions.

Fixtures (hidden size 32, 2 layers, vocabulary 320, so that everything together stays well under 2 MB):

    neox-parallel-rot25     Pythia-style hub config.json (classic keys rotary_pct, rotary_emb_base),
                            use_parallel_residual true, rotary_pct 0.25, 4 heads, model.safetensors
    neox-sequential-rot100  config.json as transformers 5 writes it (rope_parameters), parallel residual
                            off, rotary 1.0, 8 heads, rope_theta 1000, sharded safetensors with an index
    neox-v0-bin             v0 Pythia-style config without use_parallel_residual (HF default: true),
                            rotary_pct 0.5, 2 heads, pytorch_model.bin (torch.save zip) including the old
                            non-parameter buffers (attention.bias, masked_bias, rotary_emb.inv_freq)
    olmo-hf                 OLMo 1 with HF-native names (OlmoForCausalLM), clip_qkv, tied embeddings
    olmo-ai2                the same weights in AI2's hf_olmo layout (fused att_proj / ff_proj,
                            model.transformer.* names, d_model/n_heads config); shares olmo-hf's reference
    olmo2                   OLMo 2 (RMSNorm, q/k norms, post-norms), 4 heads / 2 KV heads, untied head
    llama-gqa-llama3-tied   Llama, 4 heads / 2 KV heads, head_dim 12 given (not hidden / heads), llama3
                            rope scaling with all three bands in use (rope_parameters, transformers 5's
                            config.json), tied embeddings, f32 weights
    llama-mha-untied-bf16   Llama, 4 heads (MHA), a transformers-4 config.json (rope_theta and a legacy
                            rope_scaling {"type": "linear"}, no head_dim), attention_bias and mlp_bias,
                            untied head, weights stored in bf16 (the reference runs them in f32)

Weights are random but large enough (std 0.1 instead of HF's 0.02 init) that attention is far from
uniform: rotary, head layout and the fused-QKV interleaving all change the outputs well above the test
tolerance.

Generated with (PyTorch 2.x CPU wheel, transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0):

    python3 -m venv /work/venv-lm
    /work/venv-lm/bin/pip install torch transformers safetensors tokenizers numpy
    /work/venv-lm/bin/python scripts/make_lm_fixtures.py crates/lm/tests/fixtures

Fixture names after the directory regenerate only those (the Llama ones were added later, with transformers
5.25 and PyTorch 2.15: `... crates/lm/tests/fixtures llama-gqa-llama3-tied llama-mha-untied-bf16`).
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import transformers
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoConfig,
    OlmoForCausalLM,
)

VOCAB = 320
HIDDEN = 32
LAYERS = 2
MAX_POS = 256
# Logits are stored only for texts up to this many tokens (they dominate the fixtures' size).
LOGITS_MAX_TOKENS = 64

CORPUS = """
Weak-to-strong generalization: a strong student fine-tuned on the labels of a weaker supervisor can
outperform its teacher. Pre-training is what makes this possible. The quick brown fox jumps over the lazy
dog. Pythia and OLMo publish hundreds of intermediate checkpoints, so one can watch the features of a
language model form during training. Hidden states, logits, tokens, layers, heads and rotary embeddings.
Naïve café déjà vu — ünïcödé ✓ text survives byte-level BPE. 0123456789 + - * / = ( ) [ ] { }.
"""

# Text 1 ends with <|endoftext|>, which is token id 0: pooling must find the last real token from the
# attention mask, not from `input_ids != 0`.
TEXTS = [
    "The quick brown fox.",
    "Pre-training helps.<|endoftext|>",
    "a",
    "Naïve café ✓ at 42 layers and heads.",
    # Longer than the attention kernel's 64-query blocks: several blocks, causal across blocks.
    "Weak-to-strong generalization: a strong student fine-tuned on the labels of a weaker supervisor "
    "can outperform its teacher, and pre-training is what makes this possible.",
]


OWN_FIXTURES = [
    "neox-parallel-rot25", "neox-sequential-rot100", "neox-v0-bin", "olmo-hf", "olmo-ai2", "olmo2",
    "llama-gqa-llama3-tied", "llama-mha-untied-bf16",
]


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>", "<|padding|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert tok.token_to_id("<|endoftext|>") == 0
    return tok


def randomize(model, std=0.1):
    """Replaces HF's small init: weights N(0, std²), norm weights 1 + N(0, std²), embeddings N(0, 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed" in name or "wte" in name:
                p.copy_(torch.randn_like(p))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + std * torch.randn_like(p))
            else:
                p.copy_(std * torch.randn_like(p))


def reference(model, tok, out_path, texts=TEXTS):
    """Runs each text alone through the model loaded back from disk and saves ids, hidden states, logits."""
    tensors = {}
    for j, text in enumerate(texts):
        ids = tok.encode(text).ids
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            out = model(input_ids=x, output_hidden_states=True)
        tensors[f"ids.{j}"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"hidden.{j}"] = torch.stack([h[0] for h in out.hidden_states]).contiguous()
        if len(ids) <= LOGITS_MAX_TOKENS:
            tensors[f"logits.{j}"] = out.logits[0].contiguous()
    save_file(tensors, out_path, metadata={"transformers": transformers.__version__, "torch": torch.__version__})


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def finish(d, tok, load_cls):
    """Saves the tokenizer, drops generation_config.json and writes the reference from the saved files."""
    tok.save(os.path.join(d, "tokenizer.json"))
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    model = load_cls.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    reference(model, tok, os.path.join(d, "reference.safetensors"))
    return model


def neox_parallel_rot25(root, tok):
    d = os.path.join(root, "neox-parallel-rot25")
    torch.manual_seed(1)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
        intermediate_size=4 * HIDDEN, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=MAX_POS,
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )
    model = GPTNeoXForCausalLM(cfg)
    randomize(model)
    model.save_pretrained(d)
    # The config.json of the Pythia hub repos (classic keys), not the rope_parameters form.
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": 4 * HIDDEN,
        "layer_norm_eps": 1e-05, "max_position_embeddings": MAX_POS, "model_type": "gpt_neox",
        "num_attention_heads": 4, "num_hidden_layers": LAYERS, "rotary_emb_base": 10000, "rotary_pct": 0.25,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.24.0",
        "use_cache": True, "use_parallel_residual": True, "vocab_size": VOCAB,
    })
    finish(d, tok, GPTNeoXForCausalLM)


def neox_sequential_rot100(root, tok):
    d = os.path.join(root, "neox-sequential-rot100")
    torch.manual_seed(2)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=8,
        intermediate_size=3 * HIDDEN, max_position_embeddings=MAX_POS, use_parallel_residual=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 1.0},
        tie_word_embeddings=False,
    )
    model = GPTNeoXForCausalLM(cfg)
    randomize(model)
    model.save_pretrained(d, max_shard_size="40KB")
    cfg_json = json.load(open(os.path.join(d, "config.json")))
    assert "rope_parameters" in cfg_json and "rotary_pct" not in cfg_json
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    finish(d, tok, GPTNeoXForCausalLM)


def neox_v0_bin(root, tok):
    d = os.path.join(root, "neox-v0-bin")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(3)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        intermediate_size=4 * HIDDEN, rotary_pct=0.5, rotary_emb_base=10000, max_position_embeddings=MAX_POS,
        use_parallel_residual=True, tie_word_embeddings=False,
    )
    model = GPTNeoXForCausalLM(cfg)
    randomize(model)
    # A pre-safetensors checkpoint: torch.save's zip format, head named embed_out, old buffers included.
    sd = {}
    for k, v in model.state_dict().items():
        k = "embed_out.weight" if k == "lm_head.weight" else k
        sd[k] = v.detach().clone().contiguous()
    head_dim = HIDDEN // 2
    rot = int(head_dim * 0.5)
    for i in range(LAYERS):
        p = f"gpt_neox.layers.{i}.attention."
        # Real checkpoints hold a max_pos × max_pos mask; 64 × 64 keeps the fixture small (it is ignored).
        sd[p + "bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool)).view(1, 1, 64, 64)
        sd[p + "masked_bias"] = torch.tensor(-1e9)
        sd[p + "rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    # The v0 Pythia config.json had no use_parallel_residual (HF default: true).
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": 4 * HIDDEN,
        "layer_norm_eps": 1e-05, "max_position_embeddings": MAX_POS, "model_type": "gpt_neox",
        "num_attention_heads": 2, "num_hidden_layers": LAYERS, "rotary_emb_base": 10000, "rotary_pct": 0.5,
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.24.0",
        "use_cache": True, "vocab_size": VOCAB,
    })
    finish(d, tok, GPTNeoXForCausalLM)


def olmo_hf_and_ai2(root, tok):
    d = os.path.join(root, "olmo-hf")
    torch.manual_seed(4)
    inter = 48
    cfg = OlmoConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=inter, num_hidden_layers=LAYERS,
        num_attention_heads=4, max_position_embeddings=MAX_POS, clip_qkv=0.6, tie_word_embeddings=True,
        pad_token_id=1, eos_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    model = OlmoForCausalLM(cfg)
    randomize(model)
    model.save_pretrained(d)
    model = finish(d, tok, OlmoForCausalLM)
    # clip_qkv must actually clip something, or the test would not see it.
    with torch.no_grad():
        h = model.model.layers[0].input_layernorm(model.model.embed_tokens(torch.arange(VOCAB)))
        assert model.model.layers[0].self_attn.q_proj(h).abs().max() > 0.6

    # AI2's hf_olmo layout of the same weights (the inverse of transformers' convert_olmo_weights_to_hf.py).
    a = os.path.join(root, "olmo-ai2")
    os.makedirs(a, exist_ok=True)
    sd = {}
    for i, layer in enumerate(model.model.layers):
        p = f"model.transformer.blocks.{i}."
        at = layer.self_attn
        sd[p + "att_proj.weight"] = torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight], 0)
        sd[p + "attn_out.weight"] = at.o_proj.weight
        sd[p + "ff_proj.weight"] = torch.cat([layer.mlp.up_proj.weight, layer.mlp.gate_proj.weight], 0)
        sd[p + "ff_out.weight"] = layer.mlp.down_proj.weight
    sd["model.transformer.wte.weight"] = model.model.embed_tokens.weight
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, os.path.join(a, "model.safetensors"),
              metadata={"format": "pt"})
    write_json(os.path.join(a, "config.json"), {
        "activation_type": "swiglu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["OLMoForCausalLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": False,
        "auto_map": {"AutoConfig": "configuration_olmo.OLMoConfig",
                     "AutoModelForCausalLM": "modeling_olmo.OLMoForCausalLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "sequential", "clip_qkv": 0.6,
        "d_model": HIDDEN, "embedding_dropout": 0.0, "embedding_size": VOCAB, "eos_token_id": 0,
        "flash_attention": False, "include_bias": False, "init_device": "meta", "init_fn": "mitchell",
        "init_std": 0.02, "layer_norm_type": "default", "layer_norm_with_affine": False,
        "max_sequence_length": MAX_POS, "mlp_hidden_size": 2 * inter, "mlp_ratio": 8, "model_type": "olmo",
        "multi_query_attention": False, "n_heads": 4, "n_layers": LAYERS, "pad_token_id": 1,
        "precision": "amp_bf16", "residual_dropout": 0.0, "rope": True, "rope_full_precision": True,
        "scale_logits": False, "transformers_version": "4.36.2", "use_cache": True, "vocab_size": VOCAB,
        "weight_tying": True,
    })
    tok.save(os.path.join(a, "tokenizer.json"))


def olmo2(root, tok):
    d = os.path.join(root, "olmo2")
    torch.manual_seed(5)
    cfg = Olmo2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=40, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POS, rms_norm_eps=1e-6,
        tie_word_embeddings=False, pad_token_id=1, eos_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    )
    model = Olmo2ForCausalLM(cfg)
    randomize(model)
    model.save_pretrained(d)
    finish(d, tok, Olmo2ForCausalLM)


def llama_gqa_llama3_tied(root, tok):
    d = os.path.join(root, "llama-gqa-llama3-tied")
    torch.manual_seed(6)
    # head_dim 12: inverse frequencies 1, 0.22, 0.046, ... have wavelengths 6.3, 29, 135, ...; with an
    # original context of 64 and band factors 1 and 4, the first is kept, the second is blended and the
    # rest are divided by the factor, so every branch of llama3 scaling shows in the outputs.
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=40, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=MAX_POS,
        rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=0,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    )
    model = LlamaForCausalLM(cfg)
    randomize(model)
    model.save_pretrained(d)
    cfg_json = json.load(open(os.path.join(d, "config.json")))
    assert cfg_json["rope_parameters"]["rope_type"] == "llama3" and cfg_json["head_dim"] == 12
    model = finish(d, tok, LlamaForCausalLM)
    inv = model.model.rotary_emb.inv_freq
    default = 1.0 / (10000.0 ** (torch.arange(0, 12, 2).float() / 12))
    assert inv[0] == default[0] and torch.allclose(inv[2:], default[2:] / 8) and default[1] / 8 < inv[1] < default[1]


def llama_mha_untied_bf16(root, tok):
    d = os.path.join(root, "llama-mha-untied-bf16")
    torch.manual_seed(7)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=56, num_hidden_layers=LAYERS,
        num_attention_heads=4, max_position_embeddings=MAX_POS, tie_word_embeddings=False,
        attention_bias=True, mlp_bias=True, pad_token_id=1, bos_token_id=0, eos_token_id=0,
        rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0},
    )
    model = LlamaForCausalLM(cfg)
    randomize(model)
    model.to(torch.bfloat16).save_pretrained(d)
    # The config.json of a transformers-4 era hub repo: top-level rope_theta, a legacy rope_scaling with
    # `type`, no head_dim, no num_key_value_heads (both default).
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "silu", "hidden_size": HIDDEN,
        "initializer_range": 0.02, "intermediate_size": 56, "max_position_embeddings": MAX_POS,
        "mlp_bias": True, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": LAYERS,
        "pad_token_id": 1, "pretraining_tp": 1, "rms_norm_eps": 1e-06, "rope_scaling": {"type": "linear", "factor": 2.0},
        "rope_theta": 500.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0", "use_cache": True, "vocab_size": VOCAB,
    })
    model = finish(d, tok, LlamaForCausalLM)
    assert model.config.rope_parameters["rope_type"] == "linear", model.config.rope_parameters
    assert model.model.layers[0].mlp.up_proj.bias is not None and model.model.layers[0].self_attn.o_proj.bias is not None
    inv = model.model.rotary_emb.inv_freq
    assert torch.allclose(inv, 0.5 / (500.0 ** (torch.arange(0, 8, 2).float() / 8)))


MAKERS = {
    "neox-parallel-rot25": neox_parallel_rot25,
    "neox-sequential-rot100": neox_sequential_rot100,
    "neox-v0-bin": neox_v0_bin,
    "olmo-hf": olmo_hf_and_ai2,
    "olmo-ai2": olmo_hf_and_ai2,
    "olmo2": olmo2,
    "llama-gqa-llama3-tied": llama_gqa_llama3_tied,
    "llama-mha-untied-bf16": llama_mha_untied_bf16,
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "crates/lm/tests/fixtures"
    names = sys.argv[2:] or OWN_FIXTURES
    if "olmo-hf" in names or "olmo-ai2" in names:
        names = list(dict.fromkeys(names + ["olmo-hf", "olmo-ai2"]))
    unknown = [n for n in names if n not in MAKERS]
    if unknown:
        sys.exit(f"unknown fixtures {unknown}; known: {OWN_FIXTURES}")
    # The directory is shared with other fixtures: replace only the ones asked for.
    for name in names:
        if os.path.exists(os.path.join(root, name)):
            shutil.rmtree(os.path.join(root, name))
    os.makedirs(root, exist_ok=True)
    torch.set_num_threads(1)
    tok = make_tokenizer()
    for maker in dict.fromkeys(MAKERS[n] for n in names):
        maker(root, tok)
    write_json(os.path.join(root, "texts.json"), TEXTS)
    total = os.path.getsize(os.path.join(root, "texts.json"))
    for name in OWN_FIXTURES:
        for dirpath, _, files in os.walk(os.path.join(root, name)):
            for f in files:
                total += os.path.getsize(os.path.join(dirpath, f))
    print(f"wrote {root}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
