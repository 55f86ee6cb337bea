#!/usr/bin/env python3
"""PyTorch peer of benches/pretrain.rs: the same training step on the same model and batch.

Usage: pretrain_torch.py WORKDIR THREADS WARMUP STEPS. WORKDIR holds config.json, model.safetensors
(the w2sg initial weights) and batch.u32 (B × (T+1) token ids) written by the Rust side. Prints one
JSON line: tokens_per_s, seconds_per_step, losses, torch version.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPTNeoXForCausalLM


def main():
    work, threads, warmup, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    cfg = json.loads((work / "config.json").read_text())
    model = GPTNeoXForCausalLM.from_pretrained(work, torch_dtype=torch.float32)
    model.train()
    ids = np.fromfile(work / "batch.u32", dtype="<u4").astype(np.int64)
    t = cfg["max_position_embeddings"]
    ids = torch.from_numpy(ids.reshape(-1, t + 1))
    x, y = ids[:, :t].contiguous(), ids[:, 1:].contiguous()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - t0
    print(json.dumps({
        "tokens_per_s": steps * x.numel() / secs,
        "seconds_per_step": secs / steps,
        "losses": losses,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
