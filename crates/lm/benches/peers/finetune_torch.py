"""PyTorch peer of crates/lm/benches/finetune.rs: one fine-tuning step of the same classifier.

    python finetune_torch.py MODE MODEL_DIR THREADS BATCH SEQ STEPS WARMUP
        (MODE: infer | full | lora | lora-ckpt)

GPT-NeoX base model (HF transformers, sdpa attention) from MODEL_DIR, a one-logit head on the last
token, binary cross-entropy, torch.optim.AdamW; LoRA through peft (rank 8, alpha 16, every linear layer
of every block). `lora-ckpt` is LoRA with transformers' gradient checkpointing (each block recomputed
in the backward pass, non-reentrant), PyTorch's counterpart of w2sg's block recomputation. Random token ids (B, T) below the fixtures' vocabulary of 320, as the Rust side's
texts. Prints one JSON line: seconds per step (mean after WARMUP), peak RSS.
"""
import json
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM

mode, model_dir = sys.argv[1], sys.argv[2]
threads, batch, seq, steps, warmup = (int(v) for v in sys.argv[3:8])
torch.set_num_threads(threads)
torch.manual_seed(0)
lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
body = lm.base_model
hidden = body.config.hidden_size
x = torch.randint(0, 320, (steps, batch, seq))
y = (torch.arange(batch) % 2).float()

if mode == "infer":
    with torch.no_grad():
        t0 = time.perf_counter()
        for s in range(steps):
            body(input_ids=x[s]).last_hidden_state
        per = (time.perf_counter() - t0) / steps
else:
    if mode == "lora-ckpt":
        # Checkpointing runs only in training mode; the fixture's dropout probabilities are 0.
        body.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        body.train()
    if mode in ("lora", "lora-ckpt"):
        from peft import LoraConfig, get_peft_model
        targets = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
        body = get_peft_model(body, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    head = torch.nn.Linear(hidden, 1)
    params = [p for p in body.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        h = body(input_ids=x[s]).last_hidden_state[:, -1]
        z = head(h).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    per = sum(times[warmup:]) / len(times[warmup:])

print(json.dumps({"seconds_per_step": per, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "torch": torch.__version__}))
