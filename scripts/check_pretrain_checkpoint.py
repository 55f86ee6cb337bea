#!/usr/bin/env python3
"""Cross-check a checkpoint written by `w2sg lm pretrain` against HF transformers.

Loads CKPT (a `stepN` directory) with `GPTNeoXForCausalLM.from_pretrained` in float32, fails if any
weight is missing, unexpected or mismatched, tokenizes a fixed text with the checkpoint's own
`tokenizer.json`, and writes `transformers_logits.safetensors` (`input_ids` int64 (1, T), `logits` f32
(1, T, V)) into CKPT (or --out). The Rust side then compares:

    W2SG_PRETRAIN_CHECK_DIR=CKPT cargo test --release -p w2sg-lm --test pretrain committed_checkpoint

That test also runs in CI on the committed fixture `crates/lm/tests/fixtures/pretrain-step12`, made by
this script (`--fixture` copies a checkpoint there without optimizer state). Needs torch, transformers,
safetensors, tokenizers — never run in CI.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import GPTNeoXForCausalLM

TEXT = (
    "Mr. Speaker, the state of the Union is strong. Call me Ishmael. "
    "To be, or not to be, that is the question."
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--out", type=Path, help="default: CKPT/transformers_logits.safetensors")
    ap.add_argument("--fixture", type=Path, help="copy config/weights/tokenizer here first")
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()
    ckpt = args.ckpt
    if args.fixture:
        args.fixture.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            shutil.copy(ckpt / f, args.fixture / f)
        ckpt = args.fixture
    torch.manual_seed(0)
    model, info = GPTNeoXForCausalLM.from_pretrained(
        ckpt, torch_dtype=torch.float32, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"FAIL: loading {ckpt}: {problems}")
        return 1
    model.eval()
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    ids = tok.encode(TEXT).ids[: args.max_tokens]
    ctx = json.loads((ckpt / "config.json").read_text())["max_position_embeddings"]
    ids = ids[:ctx]
    input_ids = torch.tensor([ids], dtype=torch.int64)
    with torch.no_grad():
        logits = model(input_ids).logits.float().contiguous()
    out = args.out or ckpt / "transformers_logits.safetensors"
    save_file({"input_ids": input_ids, "logits": logits}, str(out), metadata={"format": "pt"})
    print(f"OK: {ckpt} loads in transformers with no missing/unexpected keys; "
          f"{len(ids)} tokens, logits {tuple(logits.shape)} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
