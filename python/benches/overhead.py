"""Overhead of the Python layer against the CLI (BENCHMARKS.md, "Python package").

    python python/benches/overhead.py --cli target/release/w2sg --model CHECKPOINT_DIR [--reps 5]

1. `w2sg.simulate` of one 10^6-sample run (full engine, d = 1000, τ_max = 1000, one thread) against the
   wall time of `w2sg sim run` on the same config (process start, parsing, the run, writing tables).
2. `w2sg.features` of N texts against the wall time of `w2sg lm features` on the same texts (JSONL) and
   options, writing .npy.

The two sides alternate, `reps` times each; medians are reported, and the results are checked equal.
"""

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import w2sg

SIM = 'd = 1000\nlink = "he3"\ninit = "random"\nengine = "full"\n[sgd]\nlr = 0.001\ntau_max = 1000.0\n'
WORDS = ("whale sea ship captain ocean harpoon sail wave deck crew king nation law crown congress "
         "union state people court field the and of to in a is that with for great white old").split()


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(f, cpu):
    """(wall seconds, CPU seconds, result): CPU of the child processes for the CLI, of this process
    (all threads) for Python. On a loaded machine CPU time is the steadier measure of work done."""
    t, c = time.perf_counter(), cpu()
    out = f()
    return (time.perf_counter() - t, cpu() - c), out


def report(name, cli, py):
    for k, what in enumerate(("wall", "CPU")):
        c = statistics.median(x[k] for x in cli)
        p = statistics.median(x[k] for x in py)
        print(f"{name}, {what}: CLI median {c:.3f} s {['%.3f' % x[k] for x in cli]}, "
              f"Python median {p:.3f} s {['%.3f' % x[k] for x in py]}, Python/CLI {p / c:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--texts", type=int, default=2000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="w2sg-overhead-")
    cfg = os.path.join(tmp, "sim.toml")
    with open(cfg, "w") as f:
        f.write(SIM)
    cli_t, py_t = [], []
    for _ in range(a.reps):
        t, _ = timed(lambda: subprocess.run(
            [a.cli, "sim", "run", cfg, "--out", os.path.join(tmp, "sim"), "--threads", "1"],
            check=True, capture_output=True), children_cpu)
        cli_t.append(t)
        t, run = timed(lambda: w2sg.simulate(cfg, threads=1), time.process_time)
        py_t.append(t)
    with open(os.path.join(tmp, "sim", "summary.csv")) as f:
        f.readline()
        m_final = float(f.readline().split(",")[8])
    assert m_final == float(np.asarray(run.summary["m_final"])[0]), "the CLI and Python differ"
    report("simulate 1e6 samples (full engine, d = 1000, 1 thread)", cli_t, py_t)

    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(20 + rng.randrange(40))) for _ in range(a.texts)]
    data = os.path.join(tmp, "texts.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps({"txt": t}) + "\n" for t in texts)
    out = os.path.join(tmp, "f.npy")
    cli_t, py_t = [], []
    for _ in range(a.reps):
        t, _ = timed(lambda: subprocess.run(
            [a.cli, "lm", "features", "--model", a.model, "--data", data, "--out", out],
            check=True, capture_output=True), children_cpu)
        cli_t.append(t)
        t, x = timed(lambda: w2sg.features(a.model, texts), time.process_time)
        py_t.append(t)
    np.testing.assert_array_equal(np.load(out), x)
    report(f"features of {a.texts} texts, shape {x.shape}", cli_t, py_t)


if __name__ == "__main__":
    sys.exit(main())
