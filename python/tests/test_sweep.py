"""load_sweep on a sweep made here: two micro families pre-trained by `w2sg lm pretrain`, a synthetic
task, and `w2sg sweep` (the plan of crates/sweep/src/testing.rs, with one seed and one loss)."""

import csv
import json
import random

import numpy as np
import pytest

import w2sg

SEA = "whale sea ship captain ocean harpoon sail wave deck crew".split()
LAND = "king nation law crown congress union state people court field".split()
GLUE = "the and of to in a is that with for great white old".split()


def sentence(rng, sea):
    words = []
    for _ in range(4 + rng.randrange(6)):
        r = rng.randrange(10)
        if r <= 4:
            words.append(rng.choice(SEA if sea else LAND))
        elif r == 5:
            words.append(rng.choice(LAND if sea else SEA))
        else:
            words.append(rng.choice(GLUE))
    return " ".join(words)


def micro_config(hidden, layers, steps, every):
    return (
        f'preset = "tiny"\nvocab_size = 300\ntokenizer_train_bytes = 0\nvalidation_fraction = 0.1\n'
        f"steps = {steps}\nbatch_size = 4\nwarmup_steps = 2\nlr = 3e-3\ncheckpoint_every = {every}\n"
        f"eval_tokens = 128\nlog_every = 4\n[model]\nhidden_size = {hidden}\nnum_layers = {layers}\n"
        f"num_heads = {hidden // 8}\nintermediate_size = {hidden * 2}\ncontext = 32\n"
        f"rotary_pct = 0.25\nrope_theta = 10000.0\n"
    )


PLAN = """
name = "micro"
seeds = [0]
losses = ["xent"]

[[family]]
path = "strong"

[weak]
model = "weak@step8"

[[task]]
jsonl = "task.jsonl"

[features]
pooling = "mean"
batch_size = 16

[train]
epochs = 3

[pgr]
bootstrap = 50

[transition.sigmoid]
bootstrap = 10
"""


@pytest.fixture(scope="module")
def sweep_dir(cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    rng = random.Random(7)
    corpus = d / "corpus"
    corpus.mkdir()
    for k in range(8):
        paras = []
        for _ in range(40):
            sea = rng.random() < 0.5
            paras.append(". ".join(sentence(rng, sea) for _ in range(4)) + ". ")
        (corpus / f"doc{k}.txt").write_text("\n\n".join(paras))
    for name, cfg in [("strong", micro_config(32, 2, 8, 4)), ("weak", micro_config(16, 1, 8, 100))]:
        (d / f"{name}.toml").write_text(cfg)
        cli("lm", "pretrain", "--config", d / f"{name}.toml", "--corpus", corpus, "--out", d / name)
    rng = random.Random(99)
    with open(d / "task.jsonl", "w") as f:
        for _ in range(160):
            sea = rng.random() < 0.5
            f.write(json.dumps({"txt": sentence(rng, sea), "hard_label": int(sea)}) + "\n")
    (d / "plan.toml").write_text(PLAN)
    cli("sweep", d / "plan.toml", "--out", d / "out", "--quiet")
    return d / "out"


def test_load_sweep_reads_the_sweeps_tables(sweep_dir):
    sw = w2sg.load_sweep(sweep_dir)
    assert sw.plan["name"] == "micro" and sw.plan["seeds"] == [0]
    for name in ("results", "seeds", "transitions"):
        table = getattr(sw, name)
        with open(sweep_dir / f"{name}.csv", newline="") as f:
            expected = list(csv.DictReader(f))
        assert expected, f"{name}.csv has rows"
        assert list(table.keys()) == list(expected[0].keys())
        assert len(table[list(table.keys())[0]]) == len(expected)
        for k in expected[0]:
            got = list(np.asarray(table[k]))
            for i, row in enumerate(expected):
                cell, value = row[k], got[i]
                if cell == "":
                    assert value is None or value != value, (name, k, i, value)
                elif isinstance(value, (str, bool, np.bool_)):
                    assert str(value).lower() == cell.lower(), (name, k, i)
                else:
                    assert float(value) == float(cell), (name, k, i)
    # The results name the family's checkpoints and the task; PGR is a number where defined.
    results = sw.results
    steps = set(int(s) for s in np.asarray(results["step"]) if s == s)
    assert {0, 8} <= steps
    assert set(np.asarray(results["loss"])) == {"xent"}


def test_load_sweep_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such sweep directory"):
        w2sg.load_sweep(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="results.csv: missing"):
        w2sg.load_sweep(tmp_path)


def test_load_sweep_without_pandas(sweep_dir, monkeypatch):
    with_pandas = w2sg.load_sweep(sweep_dir)
    monkeypatch.setattr(w2sg, "_pd", None)
    sw = w2sg.load_sweep(sweep_dir)
    assert isinstance(sw.results, dict)
    assert list(sw.results) == list(with_pandas.results.columns)
    for name in ("step", "acc_ceiling", "acc_w2s", "pgr"):
        np.testing.assert_array_equal(sw.results[name], with_pandas.results[name].to_numpy(float))
    assert list(sw.results["loss"]) == list(with_pandas.results["loss"])
