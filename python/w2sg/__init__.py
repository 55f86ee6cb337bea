"""w2sg from Python: the single-index theory lab, its d → ∞ theory, sweep results and LM features.

The engines are the Rust crates of the ``w2sg`` CLI (through the extension module ``w2sg._w2sg``):
a run here gives the same numbers as ``w2sg sim run`` on the same config and seed. Engine calls run
with the GIL released and can be interrupted with Ctrl-C (``KeyboardInterrupt``). Bad input raises
:class:`ConfigError` (a ``ValueError``) whose message names the key, as the CLI's does.

Tables are pandas DataFrames when pandas is importable, else dicts of numpy arrays, with the columns
of the CLI's CSV files (undefined values are NaN, or None in boolean columns).

>>> import w2sg
>>> run = w2sg.simulate({"d": 1000, "init": "spectral", "pretrain": {"n_pre": 2000, "beta": 1.0}})
>>> run.summary["m0"]                                         # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _w2sg
from ._w2sg import ConfigError

__all__ = [
    "ConfigError",
    "Run",
    "Sweep",
    "simulate",
    "theory",
    "bbp_overlap",
    "bbp_eigenvalue",
    "ode",
    "hermite_coefficients",
    "load_sweep",
    "features",
    "__version__",
]

__version__: str = _w2sg.__version__

try:  # pandas is optional: without it, tables are dicts of numpy arrays.
    import pandas as _pd
except ImportError:  # pragma: no cover - exercised only where pandas is absent
    _pd = None

#: A config: a dict (as the TOML file would hold), TOML text, or a path to a TOML file.
Config = Union[Mapping[str, Any], str, "os.PathLike[str]"]
#: A DataFrame when pandas is installed, else a dict of column name to numpy array.
Table = Any


def _config_source(config: Config) -> Tuple[str, Any]:
    """How the extension should read ``config``: ("dict", d), ("text", s) or ("path", p).

    A ``str`` is TOML text when it holds a newline or ``=``, else a path.
    """
    if isinstance(config, Mapping):
        return "dict", dict(config)
    if isinstance(config, os.PathLike):
        return "path", os.fspath(config)
    if isinstance(config, str):
        if "\n" in config or "=" in config:
            return "text", config
        return "path", config
    raise TypeError(
        f"config must be a dict, TOML text or a path, not {type(config).__name__}"
    )


def _typed(values: List[str]) -> np.ndarray:
    """Column values as written in a config, typed as a CSV reader would: int, else float, else str."""
    for kind in (int, float):
        try:
            return np.array([kind(v) for v in values])
        except ValueError:
            pass
    return np.array(values, dtype=object)


def _column(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    # Lists come for text and optional-boolean columns.
    if values and all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    return np.array(values, dtype=object)


def _unique(names: Sequence[str]) -> List[str]:
    """Column names made unique as pandas.read_csv does (a second `m0` becomes `m0.1`)."""
    seen: Dict[str, int] = {}
    out = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append(name if k == 0 else f"{name}.{k}")
    return out


def _frame(table: Mapping[str, Any]) -> Table:
    names = _unique(table["columns"])
    swept = range(3, 3 + len(table.get("swept", [])))
    data: Dict[str, np.ndarray] = {}
    for j, (name, values) in enumerate(zip(names, table["data"])):
        data[name] = _typed(values) if j in swept else _column(values)
    if _pd is not None:
        return _pd.DataFrame(data, columns=names, copy=False)
    return data


@dataclass
class Run:
    """The results of :func:`simulate` (or :func:`theory`).

    Attributes:
        summary: one row per run (per grid point for theory): ``run``, ``grid``, ``seed``, the swept
            keys, the outcome columns (``m0``, ``m_peak``, ``pgr_final``, ...) and, for simulations,
            ``spectral_eigenvalue``, ``lanczos_iterations``, ``sign_flipped``, ``engine``,
            ``fallback_reason`` and ``error`` (empty unless the run failed); for theory the BBP,
            geodesic and escape-scale columns. The columns of ``summary.csv``.
        trajectory: one row per checkpoint of each run: ``run``, ``seed``, ``t``, ``tau``, ``m``,
            ``r``, ``s``, ``m_ceiling``, ``risk_w2s``, ``risk_ceiling``, ``pgr``. The columns of
            ``trajectory.csv``.
        swept_keys: the config keys that were lists (extra summary columns after ``seed``; a swept
            key named like an outcome column, e.g. ``m0``, keeps its name and the outcome column
            becomes ``m0.1``, as ``pandas.read_csv`` names the CSV's columns).
    """

    summary: Table
    trajectory: Table
    swept_keys: List[str]

    @property
    def errors(self) -> List[str]:
        """The error messages of failed runs (empty when all ran)."""
        if "error" not in self.summary:
            return []
        return [e for e in list(self.summary["error"]) if e]


def _run(tables: Mapping[str, Any]) -> Run:
    return Run(
        summary=_frame(tables["summary"]),
        trajectory=_frame(tables["trajectory"]),
        swept_keys=list(tables["summary"]["swept"]),
    )


def simulate(config: Config, threads: Optional[int] = None, progress: bool = False) -> Run:
    """Simulates every run of a config, as ``w2sg sim run`` does.

    Args:
        config: a dict (the TOML file's structure: lists are swept, ``seeds`` is a count or a list),
            TOML text, or a path to a TOML file. See the README's "Config keys".
        threads: worker threads (None: all cores). Results do not depend on it.
        progress: draw a progress bar on stderr.

    Returns:
        A :class:`Run` whose ``summary`` and ``trajectory`` have the columns of ``summary.csv`` and
        ``trajectory.csv``. A run that failed (e.g. diverged) has NaN outcomes and its message in
        ``error``, as in the CLI's table.

    Raises:
        ConfigError: the config is invalid; the message names the file (``<dict>``, ``<string>`` or
            the path) and the key, exactly as the CLI's.
        KeyboardInterrupt: on Ctrl-C (the run stops; nothing is written).
    """
    kind, value = _config_source(config)
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1 or None (got {threads})")
    return _run(_w2sg.simulate(kind, value, threads or 0, progress))


def theory(config: Config) -> Run:
    """The d → ∞ theory of every grid point of a config, as ``w2sg sim theory`` writes it.

    Same grid, same checkpoints and same columns as :func:`simulate` (``seed`` is NaN), plus
    ``bbp_overlap``, ``bbp_eigenvalue``, ``above_bbp``, ``geodesic_peak``, ``information_exponent`` and
    ``escape_samples`` in the summary.
    """
    kind, value = _config_source(config)
    return _run(_w2sg.theory(kind, value))


def bbp_overlap(beta: float, gamma: float, eta: float = 1.0) -> float:
    """BBP limit of ``|<v̂, θ*>|``: the top sample-covariance eigenvector's overlap with the truth.

    Args:
        beta: spike strength (covariance ``I + β v vᵀ``).
        gamma: aspect ratio ``d / n``.
        eta: alignment ``<v, θ*>`` of the spike with the truth.

    Returns 0 below the threshold ``β ≤ sqrt(γ)``.
    """
    return _w2sg.bbp(beta, gamma, eta)[0]


def bbp_eigenvalue(beta: float, gamma: float) -> float:
    """BBP limit of the top eigenvalue of the sample covariance (the bulk edge below threshold)."""
    return _w2sg.bbp(beta, gamma, 1.0)[1]


def ode(
    link: Union[str, Mapping[str, Any]],
    rho: float,
    m0: float,
    lr: float,
    taus: Sequence[float],
    r0: Optional[float] = None,
    weak_link: Union[str, Mapping[str, Any], None] = None,
    noise: float = 0.0,
    full: bool = False,
) -> np.ndarray:
    """The overlap ODE of online SGD on weak labels (isotropic data), the d → ∞ limit of a run.

    Args:
        link: the student's link: a name ("he3", "relu", ...) or ``{"coefficients": [...]}``.
        rho: overlap of the weak direction with the truth.
        m0: initial overlap with the truth.
        lr: per-sample learning rate.
        taus: sorted times τ = samples / d at which to report.
        r0: initial overlap with the weak direction (default ``rho * m0``, the oracle init's value).
        weak_link: the weak supervisor's link (default: ``link``).
        noise: variance of the weak labels' Gaussian noise.
        full: return all three overlaps.

    Returns:
        ``m(τ)`` as an array of shape (len(taus),); with ``full=True`` the array (len(taus), 3) of
        ``(m, r, s)`` (on isotropic data ``s`` is the overlap with the spike, here equal to ``m``).
    """
    path = _w2sg.ode(link, rho, m0, lr, [float(t) for t in taus], r0, weak_link, noise)
    return path if full else path[:, 0]


def hermite_coefficients(link: Union[str, Mapping[str, Any]], k: int = 8) -> np.ndarray:
    """Normalized Hermite coefficients ``a_0 … a_k`` of a link (``σ = Σ a_j He_j / sqrt(j!)``)."""
    return _w2sg.hermite_coefficients(link, k)


@dataclass
class Sweep:
    """The tables of a finished ``w2sg sweep`` (see :func:`load_sweep`).

    Attributes:
        results: ``results.csv``: one row per (family, step, task, loss) with accuracies and PGR.
        seeds: ``seeds.csv``: the same per seed.
        transitions: ``transitions.csv``: the fitted transition step per (family, task, loss).
        plan: the plan the sweep ran (from ``run.json``), or None when the directory has no run.json.
        path: the sweep's directory.
    """

    results: Table
    seeds: Table
    transitions: Table
    plan: Optional[Dict[str, Any]]
    path: str


def _parse_cell(v: str) -> Any:
    if v == "":
        return None
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    if v in ("true", "false"):
        return v == "true"
    return v


def _read_csv(path: str) -> Table:
    if _pd is not None:
        # The numbers the sweep wrote, to the last bit: pandas < 3 parses exactly only with round_trip
        # (pandas 3 does by default and deprecates the option).
        old_pandas = int(_pd.__version__.split(".")[0]) < 3
        exact = {"float_precision": "round_trip"} if old_pandas else {}
        return _pd.read_csv(path, keep_default_na=False, na_values=[""], **exact)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ConfigError(f"{path}: empty table (no header)")
    header, body = rows[0], rows[1:]
    out: Dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        cells = [_parse_cell(r[j]) if j < len(r) else None for r in body]
        present = [c for c in cells if c is not None]
        # Numbers (NaN where empty); an all-empty column is NaN too, as pandas reads it.
        if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in present):
            out[name] = np.array([np.nan if c is None else c for c in cells], dtype=float)
            if present and all(isinstance(c, int) for c in cells):
                out[name] = out[name].astype(np.int64)
        else:
            out[name] = np.array(cells, dtype=object)
    return out


def load_sweep(path: Union[str, "os.PathLike[str]"]) -> Sweep:
    """Reads the tables of a finished ``w2sg sweep PLAN --out DIR`` run from ``DIR``.

    Raises:
        FileNotFoundError: ``DIR`` or one of its tables is missing (the sweep has not finished, or ran
            as shards that were not merged yet).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such sweep directory")
    tables = {}
    for name in ("results", "seeds", "transitions"):
        file = os.path.join(path, f"{name}.csv")
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{file}: missing; is the sweep finished (shards merged with `w2sg sweep merge`)?"
            )
        tables[name] = _read_csv(file)
    plan = None
    run_json = os.path.join(path, "run.json")
    if os.path.isfile(run_json):
        with open(run_json, encoding="utf-8") as f:
            plan = json.load(f).get("plan")
    return Sweep(plan=plan, path=path, **tables)


def features(
    model: str,
    texts: Sequence[str],
    layer: int = -1,
    pooling: str = "last",
    max_tokens: Optional[int] = None,
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    dtype: str = "f32",
    device: str = "cpu",
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    progress: bool = False,
) -> np.ndarray:
    """Pooled hidden states of ``texts``, as ``w2sg lm features`` computes them.

    Args:
        model: ``PATH[@REV]`` (a checkpoint, family or hub-cache repository directory) or
            ``ORG/NAME[@REV]`` in the hub cache.
        texts: the input texts.
        layer: hidden-state index: 0 = embeddings … L = last layer after the final norm; negative
            counts from the end (-1 = L).
        pooling: ``"last"`` (last real token) or ``"mean"`` (over real tokens).
        max_tokens: truncation length (None: the model's context length).
        batch_size: most sequences per forward pass.
        max_batch_tokens: most padded tokens per forward pass (bounds activation memory).
        dtype: compute dtype, ``"f32"``, ``"bf16"`` or ``"f16"``.
        device: ``"cpu"``, or ``"cuda"`` / ``"cuda:N"`` in a CUDA build.
        cache_dir: hub cache root (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub).
        progress: draw a progress bar on stderr.

    Returns:
        A float32 array of shape (len(texts), hidden), rows in input order.

    Raises:
        ConfigError: bad input (layer out of range, unknown pooling, an empty text, a malformed
            checkpoint).
        FileNotFoundError: the model spec resolves to nothing.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    return _w2sg.features(
        os.fspath(model) if isinstance(model, os.PathLike) else model,
        list(texts),
        layer,
        pooling,
        max_tokens,
        batch_size,
        max_batch_tokens,
        dtype,
        device,
        None if cache_dir is None else os.fspath(cache_dir),
        progress,
    )
