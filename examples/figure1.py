"""Figure 1 from Python: pre-training makes weak-to-strong generalization possible.

Simulates the quick-start config (He3 single-index model, d = 1000, weak supervisor with ρ = 0.8) from
a spectral (pre-trained) and a random start, four seeds each, and plots the overlap m(τ) with the truth
against τ = samples / d, with the d → ∞ theory (BBP start + overlap ODE) overlaid.

    pip install ./python matplotlib
    python examples/figure1.py [OUT.png]        # MPLBACKEND=Agg without a display
"""

import sys

import matplotlib.pyplot as plt
import numpy as np

import w2sg

CONFIG = {
    "d": 1000,
    "link": "he3",
    "init": ["spectral", "random"],
    "seeds": 4,
    "pretrain": {"n_pre": 2000, "beta": 1.0},
    "weak": {"rho": 0.8},
    "sgd": {"lr": 0.001, "tau_max": 1000},
}


def main(out: str) -> None:
    run = w2sg.simulate(CONFIG)
    th = w2sg.theory(CONFIG)
    summary, traj = run.summary, run.trajectory
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for init, color in (("spectral", "tab:blue"), ("random", "tab:orange")):
        runs = np.asarray(summary["run"])[np.asarray(summary["init"]) == init]
        for k, r in enumerate(runs):
            sel = np.asarray(traj["run"]) == r
            ax.plot(np.asarray(traj["tau"])[sel], np.asarray(traj["m"])[sel], color=color,
                    alpha=0.35, lw=1, label=f"{init} start (simulation, d = 1000)" if k == 0 else None)
        grid = np.asarray(th.summary["grid"])[np.asarray(th.summary["init"]) == init][0]
        tsel = np.asarray(th.trajectory["run"]) == grid
        ax.plot(np.asarray(th.trajectory["tau"])[tsel], np.asarray(th.trajectory["m"])[tsel],
                color=color, lw=2, ls="--", label=f"{init} start (theory, d → ∞)")
    ax.axhline(CONFIG["weak"]["rho"], color="gray", lw=1, ls=":", label="weak supervisor ρ")
    ax.set_xscale("log")
    ax.set_xlabel("τ = samples / d")
    ax.set_ylabel("overlap m(τ) with the truth")
    ax.set_title("Pre-training makes weak-to-strong generalization possible (He3)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    spectral = np.asarray(summary["init"]) == "spectral"
    print(
        f"wrote {out}: spectral start m0 = {np.mean(np.asarray(summary['m0'])[spectral]):.3f} "
        f"(BBP {w2sg.bbp_overlap(1.0, 0.5):.3f}), peak m = "
        f"{np.mean(np.asarray(summary['m_peak'])[spectral]):.3f} > ρ = 0.8; random start final m = "
        f"{np.mean(np.abs(np.asarray(summary['m_final'])[~spectral])):.3f}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "figure1.png")
