"""Shared fixtures: the repository root and the `w2sg` CLI binary the Python results are compared with.

The CLI is target/release/w2sg (built by `cargo build --release -p w2sg-cli`, and by CI's
`cargo test --workspace --release`); W2SG_BIN overrides it. Tests that compare with the CLI skip,
saying why, when it is absent.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli_path():
    return Path(os.environ.get("W2SG_BIN", ROOT / "target" / "release" / "w2sg"))


@pytest.fixture(scope="session")
def cli():
    path = cli_path()
    if not path.is_file():
        pytest.skip(f"the w2sg CLI is not built at {path} (cargo build --release -p w2sg-cli)")

    def run(*args, check=True, **kw):
        proc = subprocess.run([str(path), *map(str, args)], capture_output=True, text=True, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"w2sg {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def root():
    return ROOT
