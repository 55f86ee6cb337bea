"""PyTorch side of w2sg's fine-tuning parity tests (crates/lm/tests/finetune.rs).

For each case directory written by the Rust test (`W2SG_WRITE_FINETUNE_CASES=DIR cargo test --release
-p w2sg-lm --test finetune parity`), this script builds the same classifier in HF transformers (+ peft
for LoRA) from the fixture checkpoint, loads the initial trainable tensors w2sg drew (`init.safetensors`:
the head `score.weight`/`score.bias`, and LoRA's A and B), trains on the same micro-batches with the same
schedule, and writes `OUT/<case>/expected.json` with the per-step losses and the trained head.

    python scripts/make_finetune_fixtures.py DIR crates/lm/tests/fixtures/finetune

The classifier: one logit z = s . h + c on the final hidden state (after the final norm) of the last
real token; loss per optimizer step = sum over its micro-batches of the binary cross-entropy of z
against the soft labels, divided by the step's number of examples; torch.optim.AdamW (betas 0.9/0.999,
eps 1e-8) with weight decay on tensors of two or more dimensions; learning rate: linear warmup to the
peak over round(warmup_frac * steps) steps (the first step at peak/warmup), then cosine decay to 0.

What trains: layers = -1, every parameter of the base model (not the LM head); k >= 1, blocks L-k..L-1
and the final norm; LoRA (rank r > 0): peft adapters (dropout 0, no bias) on every linear layer of the
trained blocks, with lora_alpha as given, base weights frozen. The head always trains.

Tested with torch 2.15 (CPU), transformers 5.25, peft 0.21. The Llama cases (llama-*) were added later by
running the script on a directory holding only those case directories.
"""

import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

FIXTURES = Path(__file__).resolve().parent.parent / "crates/lm/tests/fixtures"


def lr_at(step, total, warmup, peak):
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


def block_of(name):
    for key in ("layers.", "blocks."):
        if key in name:
            rest = name.split(key, 1)[1]
            digits = rest.split(".", 1)[0]
            if digits.isdigit():
                return int(digits)
    return None


def run_case(case_dir: Path, out_dir: Path):
    case = json.loads((case_dir / "case.json").read_text())
    init = load_file(case_dir / "init.safetensors")
    ckpt = FIXTURES / case["fixture"]
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32, attn_implementation="eager")
    base = lm.base_model
    prefix = lm.base_model_prefix + "."
    n_layers = lm.config.num_hidden_layers
    k = case["layers"]
    first = 0 if k < 0 else n_layers - k
    for p in base.parameters():
        p.requires_grad_(False)

    rank = case["lora_rank"]
    if rank > 0:
        from peft import LoraConfig, get_peft_model

        targets = sorted({n for n, m in base.named_modules()
                          if isinstance(m, torch.nn.Linear) and block_of(n) is not None and block_of(n) >= first})
        config = LoraConfig(r=rank, lora_alpha=case["lora_alpha"], lora_dropout=0.0, bias="none",
                            target_modules=targets)
        model = get_peft_model(base, config)
        # w2sg's initial adapters, by their HF module names.
        named = dict(model.named_parameters())
        loaded = 0
        for name, t in init.items():
            if ".lora_" not in name:
                continue
            module = name[len(prefix):].replace(".lora_A.weight", "").replace(".lora_B.weight", "")
            which = "lora_A" if ".lora_A." in name else "lora_B"
            key = f"base_model.model.{module}.{which}.default.weight"
            with torch.no_grad():
                named[key].copy_(t)
            loaded += 1
        assert loaded == 2 * len(targets), (loaded, targets)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        body = model
    else:
        trainable = []
        for n, p in base.named_parameters():
            b = block_of(n)
            train = (k < 0) or (b is not None and b >= first) or (b is None and p.dim() == 1 and k > 0)
            if train:
                p.requires_grad_(True)
                trainable.append((n, p))
        body = base

    head_w = torch.nn.Parameter(init["score.weight"].clone())
    head_b = torch.nn.Parameter(init["score.bias"].clone())
    params = [p for _, p in trainable] + [head_w, head_b]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": case["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=case["lr"], betas=(0.9, 0.999), eps=1e-8)

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    ids = [tok.encode(t, add_special_tokens=True).ids[: case["max_tokens"]] for t in case["texts"]]
    labels = torch.tensor(case["labels"], dtype=torch.float32)

    def logits(batch):
        seqs = [ids[i] for i in batch]
        t = max(len(s) for s in seqs)
        x = torch.tensor([s + [0] * (t - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs])
        h = body(input_ids=x, attention_mask=mask).last_hidden_state
        last = torch.tensor([len(s) - 1 for s in seqs])
        pooled = h[torch.arange(len(seqs)), last]
        return (pooled @ head_w.T).squeeze(1) + head_b

    total = case["steps"]
    warmup = round(case["warmup_frac"] * total)
    per_step = case["batch_size"] * case["grad_accumulation"]
    n = len(case["texts"])
    # Examples per optimizer step: full steps, then the epoch's remainder.
    sizes = ([per_step] * (n // per_step) + ([n % per_step] if n % per_step else [])) * case["epochs"]
    assert len(sizes) == total, (len(sizes), total)
    micro = iter(case["micro_batches"])
    losses = []
    for step, size in enumerate(sizes):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, warmup, case["lr"])
        opt.zero_grad()
        seen, step_loss = 0, 0.0
        while seen < size:
            batch = next(micro)
            seen += len(batch)
            z = logits(batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, labels[batch], reduction="sum") / size
            loss.backward()
            step_loss += loss.item()
        opt.step()
        losses.append(step_loss)

    out = out_dir / case_dir.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "expected.json").write_text(json.dumps({
        "losses": losses,
        "head_weight": head_w.detach().flatten().tolist(),
        "head_bias": head_b.item(),
        "torch": torch.__version__,
    }, indent=1) + "\n")
    worst = max(abs(a - b) / abs(b) for a, b in zip(case["w2sg_losses"], losses))
    print(f"{case_dir.name}: {total} steps, loss {losses[0]:.6f} -> {losses[-1]:.6f}, "
          f"max rel. difference to w2sg {worst:.2e}")


def main():
    cases, out = Path(sys.argv[1]), Path(sys.argv[2])
    for d in sorted(p for p in cases.iterdir() if (p / "case.json").is_file()):
        run_case(d, out)


if __name__ == "__main__":
    main()
