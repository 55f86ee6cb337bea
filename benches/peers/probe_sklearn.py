#!/usr/bin/env python3
"""scikit-learn peer of crates/protocol/benches/probe.rs: the same probe on the same features.

Reads train_x.npy (f32, n x k), train_y.npy (f64 targets in {0, 1}), test_x.npy, test_y.npy from DIR;
fits StandardScaler + LogisticRegression(lbfgs) with C = 1/(l2 * n), tol = gtol (scikit-learn's
lbfgs minimizes the same per-example-normalized objective and stops on the same max-|gradient| test),
REPEATS times; prints one JSON line (median fit seconds, iterations, training objective, test
accuracy) and writes the test-set P(y = 1) to DIR/sklearn_test_proba.npy.

Thread count: the caller sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS; threadpoolctl pins BLAS and
OpenMP here as well, so both sides run on one thread. Install scikit-learn in a virtual environment
outside the repository (e.g. python3 -m venv /work/venv-protocol && /work/venv-protocol/bin/pip
install scikit-learn); never in CI.
"""
import json
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def main():
    d, l2, gtol, max_iter, repeats, threads = sys.argv[1:7]
    l2, gtol, max_iter, repeats, threads = float(l2), float(gtol), int(max_iter), int(repeats), int(threads)
    xtr = np.load(f"{d}/train_x.npy")
    ytr = np.load(f"{d}/train_y.npy")
    xte = np.load(f"{d}/test_x.npy")
    yte = np.load(f"{d}/test_y.npy")
    n = xtr.shape[0]
    if threadpool_limits is not None:
        threadpool_limits(limits=threads)  # applies until the process exits
    times = []
    warned = False
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            t0 = time.perf_counter()
            scaler = StandardScaler().fit(xtr)
            xs = scaler.transform(xtr)
            model = LogisticRegression(C=1.0 / (l2 * n), tol=gtol, max_iter=max_iter, solver="lbfgs")
            model.fit(xs, ytr)
            times.append(time.perf_counter() - t0)
            warned = warned or any(issubclass(w.category, ConvergenceWarning) for w in caught)
    z = xs.astype(np.float64) @ model.coef_[0].astype(np.float64) + float(model.intercept_[0])
    t = ytr.astype(np.float64)
    xent = np.mean(np.logaddexp(0.0, z) - t * z)
    objective = xent + 0.5 * l2 * float(np.sum(model.coef_.astype(np.float64) ** 2))
    proba = model.predict_proba(scaler.transform(xte))[:, 1].astype(np.float64)
    np.save(f"{d}/sklearn_test_proba.npy", proba)
    acc = float(np.mean((proba > 0.5) == (yte > 0.5)))
    print(json.dumps({
        "seconds": float(np.median(times)),
        "iterations": int(model.n_iter_[0]),
        "objective": float(objective),
        "test_accuracy": acc,
        "converged": not warned,
        "dtype": str(xs.dtype),
        "sklearn": __import__("sklearn").__version__,
        "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
