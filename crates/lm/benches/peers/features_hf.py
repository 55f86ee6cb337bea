"""PyTorch peer of crates/lm/benches/features.rs: the same feature extraction with HF transformers.

Same model files, same texts, same tokenizer.json, same thread count, same algorithm as `w2sg_lm::features`:
tokenize, sort by length (longest first), batches of `batch_size` padded on the right, `GPTNeoXModel`
(no LM head: features do not need logits) with the attention mask, last hidden state after the final
norm, pooled at the last real token. One untimed warm-up batch first.

Usage: python features_hf.py MODEL_DIR TEXTS.jsonl THREADS BATCH_SIZE OUT.npy
Prints one JSON line: tokens, seconds, cpu_seconds, load_seconds, peak_rss_kb, import_rss_kb, versions.
"""

import json
import os
import resource
import sys
import time

model_dir, texts_path, threads, batch_size, out_path = sys.argv[1:6]
threads, batch_size = int(threads), int(batch_size)
os.environ["OMP_NUM_THREADS"] = str(threads)
os.environ["MKL_NUM_THREADS"] = str(threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, PreTrainedTokenizerFast  # noqa: E402

torch.set_num_threads(threads)
import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

t0 = time.perf_counter()
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
model.eval()
load_seconds = time.perf_counter() - t0
max_tokens = model.config.max_position_embeddings

with open(texts_path) as f:
    texts = [json.loads(line)["text"] for line in f if line.strip()]


def run(texts, timed):
    enc = tok(texts, add_special_tokens=True)["input_ids"]
    enc = [ids[:max_tokens] for ids in enc]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    feats = np.zeros((len(enc), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            t = max(len(enc[i]) for i in chunk)
            ids = torch.zeros((len(chunk), t), dtype=torch.long)
            mask = torch.zeros((len(chunk), t), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, :len(enc[i])] = torch.tensor(enc[i])
                mask[row, :len(enc[i])] = 1
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = mask.sum(1) - 1
            feats[chunk] = h[torch.arange(len(chunk)), last].float().numpy()
    return feats, sum(len(e) for e in enc)


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


run(texts[:batch_size], False)  # warm-up
t0, c0 = time.perf_counter(), cpu_seconds()
feats, tokens = run(texts, True)
seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
np.save(out_path, feats)
print(json.dumps({
    "tokens": tokens,
    "seconds": seconds,
    "cpu_seconds": cpu,
    "load_seconds": load_seconds,
    "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "import_rss_kb": import_rss,
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "attn": model.config._attn_implementation,
}))
