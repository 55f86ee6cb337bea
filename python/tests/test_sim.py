"""The theory lab from Python: simulate against theory and against the CLI, config errors, Ctrl-C."""

import _thread
import csv
import math
import threading
import time

import numpy as np
import pytest

import w2sg

# The example: He3, spectral and random starts, d = 1000, 10^6 samples per run.
QUICK = {
    "d": 1000,
    "link": "he3",
    "init": ["spectral", "random"],
    "seeds": 4,
    "pretrain": {"n_pre": 2000, "beta": 1.0},
    "weak": {"rho": 0.8},
    "sgd": {"lr": 0.001, "tau_max": 1000},
}


def col(table, name):
    return np.asarray(table[name])


def rows(table, mask):
    return {k: np.asarray(v)[mask] for k, v in dict(table).items()}


@pytest.fixture(scope="module")
def quick():
    return w2sg.simulate(QUICK), w2sg.theory(QUICK)


def test_spectral_start_matches_bbp_and_the_ode_path(quick):
    run, th = quick
    init = col(run.summary, "init")
    spectral = init == "spectral"
    assert spectral.sum() == 4 and (~spectral).sum() == 4
    # BBP: gamma = d / n_pre = 0.5, beta = 1.
    limit = w2sg.bbp_overlap(beta=1.0, gamma=0.5)
    assert limit == pytest.approx(math.sqrt((1 - 0.5) / (1 + 0.5)), rel=1e-12)
    m0 = col(run.summary, "m0")[spectral]
    # Finite-size spread of the spectral overlap is O(d^-1/2) ≈ 0.03; the mean of 4 seeds is closer.
    assert abs(m0.mean() - limit) < 0.05, (m0, limit)
    th_spec = col(th.summary, "init") == "spectral"
    assert col(th.summary, "bbp_overlap")[th_spec][0] == pytest.approx(limit, rel=1e-12)

    # m(τ) along the path, averaged over seeds, against the theory's ODE path on the same grid.
    traj, ttraj = run.trajectory, th.trajectory
    spectral_runs = col(run.summary, "run")[spectral]
    grid_spec = col(th.summary, "grid")[th_spec][0]
    sel = np.isin(col(traj, "run"), spectral_runs)
    taus = np.unique(col(traj, "tau")[sel])
    sim_m = np.array([col(traj, "m")[sel & (col(traj, "tau") == t)].mean() for t in taus])
    tsel = col(ttraj, "run") == grid_spec
    np.testing.assert_allclose(col(ttraj, "tau")[tsel], taus)
    theory_m = col(ttraj, "m")[tsel]
    assert np.max(np.abs(sim_m - theory_m)) < 0.06, np.max(np.abs(sim_m - theory_m))
    # The W2SG effect itself: the spectral start ends above its start, the random one stays near 0.
    assert sim_m[-1] > m0.mean() + 0.1
    assert np.all(np.abs(col(run.summary, "m_final")[~spectral]) < 0.2)


def test_oracle_start_follows_w2sg_ode():
    cfg = {"d": 2000, "link": "he2", "init": "overlap", "m0": 0.6, "seeds": 3,
           "weak": {"rho": 0.7}, "sgd": {"lr": 0.05, "tau_max": 10}}
    run, th = w2sg.simulate(cfg), w2sg.theory(cfg)
    taus = col(th.trajectory, "tau")
    ode = w2sg.ode(link="he2", rho=0.7, m0=0.6, lr=0.05, taus=taus)
    # The same ODE as the theory table's (to the integrator's tolerance).
    np.testing.assert_allclose(ode, col(th.trajectory, "m"), atol=1e-7)
    full = w2sg.ode("he2", 0.7, 0.6, 0.05, taus, full=True)
    assert full.shape == (len(taus), 3)
    np.testing.assert_allclose(full[:, 1], col(th.trajectory, "r"), atol=1e-7)
    # The simulation (3 seeds, d = 2000) within finite-size error of it.
    sim_m = np.array([col(run.trajectory, "m")[col(run.trajectory, "tau") == t].mean() for t in taus])
    assert np.max(np.abs(sim_m - ode)) < 0.05
    with pytest.raises(w2sg.ConfigError, match="taus must be sorted"):
        w2sg.ode("he2", 0.7, 0.6, 0.05, [2.0, 1.0])
    with pytest.raises(w2sg.ConfigError, match="unknown link `he9`"):
        w2sg.ode("he9", 0.7, 0.6, 0.05, [1.0])


def test_bbp_and_hermite_closed_forms():
    assert w2sg.bbp_overlap(beta=0.5, gamma=0.8) == 0.0  # below threshold sqrt(0.8)
    beta, gamma = 2.5, 0.8
    expected = math.sqrt((1 - gamma / beta**2) / (1 + gamma / beta))
    assert w2sg.bbp_overlap(beta=beta, gamma=gamma) == pytest.approx(expected, rel=1e-12)
    assert w2sg.bbp_eigenvalue(beta, gamma) == pytest.approx((1 + beta) * (1 + gamma / beta))
    assert w2sg.bbp_eigenvalue(0.5, 0.81) == pytest.approx((1 + 0.9) ** 2)
    he3 = w2sg.hermite_coefficients("he3", k=6)
    np.testing.assert_allclose(he3, [0, 0, 0, math.sqrt(6), 0, 0, 0], atol=1e-9)
    relu = w2sg.hermite_coefficients("relu", k=8)
    assert relu.shape == (9,)
    # ReLU: a0 = E[relu] = 1/sqrt(2π), a1 = E[z relu(z)] = 1/2, odd a_k (k ≥ 3) = 0.
    assert relu[0] == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-9)
    assert relu[1] == pytest.approx(0.5, rel=1e-9)
    assert relu[3] == relu[5] == relu[7] == 0.0
    with pytest.raises(w2sg.ConfigError):
        w2sg.hermite_coefficients("nope")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def same_cell(cell, value):
    if cell == "":
        return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""
    if isinstance(value, (bool, np.bool_)):
        return cell == str(bool(value)).lower()
    if isinstance(value, str):
        return cell == value
    # The CSV holds the shortest round-trip decimal of each f64: parsing it gives the same number.
    return float(cell) == float(value)


def assert_table_equals_csv(table, path):
    expected = read_csv(path)
    data = {k: list(np.asarray(v)) for k, v in dict(table).items()}
    assert list(data) == list(expected[0].keys())
    assert all(len(v) == len(expected) for v in data.values())
    for i, row in enumerate(expected):
        for k, cell in row.items():
            assert same_cell(cell, data[k][i]), (path.name, i, k, cell, data[k][i])


def test_same_numbers_as_the_cli(cli, tmp_path):
    cfg = tmp_path / "quick.toml"
    cfg.write_text(
        'd = 1000\nlink = "he3"\ninit = ["spectral", "random"]\nseeds = 2\n'
        "[pretrain]\nn_pre = 2000\nbeta = 1.0\n[weak]\nrho = [0.6, 0.8]\n"
        "[sgd]\nlr = 0.001\ntau_max = 100.0\n"
    )
    cli("sim", "run", cfg, "--out", tmp_path / "out")
    cli("sim", "theory", cfg, "--out", tmp_path / "theory")
    for source in (cfg, str(cfg), cfg.read_text()):
        run = w2sg.simulate(source, threads=2)
        assert run.swept_keys == ["init", "weak.rho"]
        assert_table_equals_csv(run.summary, tmp_path / "out" / "summary.csv")
        assert_table_equals_csv(run.trajectory, tmp_path / "out" / "trajectory.csv")
    th = w2sg.theory(cfg)
    assert_table_equals_csv(th.summary, tmp_path / "theory" / "summary.csv")
    assert_table_equals_csv(th.trajectory, tmp_path / "theory" / "trajectory.csv")


def test_dict_text_and_thread_count_give_the_same_numbers():
    cfg = dict(QUICK, seeds=2, sgd={"lr": 0.001, "tau_max": 50})
    text = (
        'd = 1000\nlink = "he3"\ninit = ["spectral", "random"]\nseeds = 2\n'
        "[pretrain]\nn_pre = 2000\nbeta = 1.0\n[weak]\nrho = 0.8\n[sgd]\nlr = 0.001\ntau_max = 50\n"
    )
    a = w2sg.simulate(cfg, threads=1)
    b = w2sg.simulate(text, threads=2)
    for name in ("m0", "m_peak", "m_final", "pgr_final", "risk_w2s_final"):
        np.testing.assert_array_equal(col(a.summary, name), col(b.summary, name))
    np.testing.assert_array_equal(col(a.trajectory, "m"), col(b.trajectory, "m"))


@pytest.mark.parametrize(
    "toml_text, key",
    [
        ("d = 1000\n[sgd]\nlrr = 0.1\n", "sgd.lrr"),
        ("d = 1000\n[sgd]\nlr = -0.1\n", "sgd.lr"),
        ('d = 1000\nlink = "he9"\n', "link"),
        ("d = 1000\nseeds = 0\n", "seeds"),
    ],
)
def test_config_errors_are_the_clis(cli, tmp_path, toml_text, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml_text)
    proc = cli("sim", "run", path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    # The CLI's whole message (serde's may span lines), after its "error: " prefix.
    cli_message = proc.stderr.strip()
    assert cli_message.startswith("error: "), cli_message
    with pytest.raises(w2sg.ConfigError) as info:
        w2sg.simulate(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value).strip() == cli_message[len("error: "):]
    assert f"key `{key}`" in str(info.value)
    # The same config as text names `<string>` and the same key.
    with pytest.raises(w2sg.ConfigError, match=f"^<string>: key `{key}`"):
        w2sg.simulate(toml_text)


def test_dict_config_errors_name_the_key(tmp_path):
    with pytest.raises(w2sg.ConfigError, match=r"^<dict>: key `sgd.lr`: must be"):
        w2sg.simulate({"d": 100, "sgd": {"lr": -1.0}})
    with pytest.raises(w2sg.ConfigError, match=r"^<dict>: key `weak.rho`: a NoneType cannot be"):
        w2sg.simulate({"d": 100, "weak": {"rho": None}})
    with pytest.raises(w2sg.ConfigError, match=r"^<dict>: key `pretrain.bta`"):
        w2sg.simulate({"d": 100, "pretrain": {"bta": 1.0}})
    with pytest.raises(w2sg.ConfigError, match=r"cannot read"):
        w2sg.simulate(tmp_path / "missing.toml")
    # numpy scalars are numbers.
    run = w2sg.simulate({"d": np.int64(100), "init": "random", "sgd": {"tau_max": np.float64(1.0)}})
    assert len(col(run.summary, "m0")) == 1


def test_ctrl_c_interrupts_a_long_run_within_a_second():
    # The full engine at d = 4000 for 4·10^7 samples: minutes of work.
    cfg = {"d": 4000, "link": "he3", "init": "random", "engine": "full",
           "sgd": {"lr": 0.001, "tau_max": 10000}}
    fired = {}

    def interrupt():
        fired["at"] = time.monotonic()
        _thread.interrupt_main()

    timer = threading.Timer(0.5, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            w2sg.simulate(cfg, threads=1)
        latency = time.monotonic() - fired["at"]
    finally:
        timer.cancel()
    assert latency < 1.0, latency
    # The engine is usable afterwards.
    assert len(col(w2sg.simulate({"d": 100, "sgd": {"tau_max": 1.0}}).summary, "m0")) == 1


def rust_owned(array):
    """Whether a numpy array views a buffer numpy did not allocate (the Rust Vec handed over)."""
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return not isinstance(base, np.ndarray) and not array.flags.owndata


def test_result_columns_are_not_copied():
    run = w2sg.simulate({"d": 100, "sgd": {"tau_max": 1.0}})
    assert rust_owned(np.asarray(run.trajectory["m"]))
    assert rust_owned(np.asarray(run.summary["m0"]))


def test_tables_without_pandas_are_dicts_of_arrays(monkeypatch):
    cfg = {"d": 200, "init": ["spectral", "random"], "sgd": {"tau_max": 2.0}}
    with_pandas = w2sg.simulate(cfg)
    monkeypatch.setattr(w2sg, "_pd", None)
    run = w2sg.simulate(cfg)
    assert isinstance(run.summary, dict) and isinstance(run.trajectory, dict)
    assert list(run.summary) == list(with_pandas.summary.columns)
    assert list(run.trajectory) == list(with_pandas.trajectory.columns)
    assert all(isinstance(v, np.ndarray) for v in run.summary.values())
    assert list(run.summary["init"]) == ["spectral", "random"]
    np.testing.assert_array_equal(run.trajectory["m"], with_pandas.trajectory["m"].to_numpy())
    assert run.summary["sign_flipped"][1] is None  # a random start has no eigenvector to flip
    assert run.errors == []


def test_a_swept_key_named_like_an_outcome_column(cli, tmp_path):
    # `m0` is both the oracle init's key and an outcome column: the swept value is `config.m0`, as in
    # the CLI's summary.csv.
    text = 'd = 500\ninit = "overlap"\nm0 = [0.3, 0.6]\n[sgd]\ntau_max = 2.0\n'
    (tmp_path / "c.toml").write_text(text)
    cli("sim", "run", tmp_path / "c.toml", "--out", tmp_path / "out")
    run = w2sg.simulate(text)
    assert run.swept_keys == ["m0"]
    names = list(dict(run.summary).keys())
    assert names[3:5] == ["config.m0", "m0"]
    np.testing.assert_array_equal(col(run.summary, "config.m0"), [0.3, 0.6])
    np.testing.assert_allclose(col(run.summary, "m0"), [0.3, 0.6], atol=1e-12)
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][3:5] == ["config.m0", "m0"]
    for i, row in enumerate(rows[1:]):
        assert float(row[3]) == col(run.summary, "config.m0")[i]
        assert float(row[4]) == col(run.summary, "m0")[i]