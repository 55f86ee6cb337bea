"""Features from Python equal `w2sg lm features` on the tiny GPT-NeoX fixture checkpoint."""

import json

import numpy as np
import pytest

import w2sg


@pytest.fixture(scope="module")
def fixture(root):
    model = root / "crates" / "lm" / "tests" / "fixtures" / "neox-parallel-rot25"
    texts = json.loads((root / "crates" / "lm" / "tests" / "fixtures" / "texts.json").read_text())
    # More texts than one batch, of different lengths, so batching and reordering are exercised.
    texts = texts + [f"{t} {i}" for i, t in enumerate(texts * 4)]
    return model, texts


@pytest.mark.parametrize(
    "layer, pooling, max_tokens", [(-1, "last", None), (0, "mean", None), (1, "last", 8)]
)
def test_features_equal_the_cli(cli, tmp_path, fixture, layer, pooling, max_tokens):
    model, texts = fixture
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"txt": t}) + "\n" for t in texts))
    out = tmp_path / "f.npy"
    args = ["lm", "features", "--model", model, "--data", data, "--out", out,
            f"--layer={layer}", "--pooling", pooling, "--batch-size", "4"]
    if max_tokens is not None:
        args += ["--max-tokens", max_tokens]
    cli(*args)
    expected = np.load(out)
    got = w2sg.features(str(model), texts, layer=layer, pooling=pooling, max_tokens=max_tokens,
                        batch_size=4)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(texts), expected.shape[1])
    np.testing.assert_array_equal(got, expected)


def test_features_are_handed_over_without_a_copy(fixture):
    model, texts = fixture
    x = w2sg.features(model, texts[:3])
    # The array views the Rust buffer (its base is the Rust container, not another numpy array).
    assert not x.flags.owndata and x.base is not None and not isinstance(x.base, np.ndarray)
    assert x.flags.c_contiguous


def test_feature_errors(fixture, tmp_path):
    model, texts = fixture
    with pytest.raises(w2sg.ConfigError, match="layer 99 is out of range"):
        w2sg.features(model, texts, layer=99)
    with pytest.raises(w2sg.ConfigError, match="unknown pooling"):
        w2sg.features(model, texts, pooling="max")
    with pytest.raises(w2sg.ConfigError, match=r"texts\[1\] has no tokens"):
        w2sg.features(model, ["a", ""])
    with pytest.raises(FileNotFoundError):
        w2sg.features(str(tmp_path / "nothing-here"), texts)
    with pytest.raises(TypeError):
        w2sg.features(model, "one string")
