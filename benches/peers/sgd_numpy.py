"""NumPy peer for the w2sg throughput benchmark: the same online spherical SGD, written plainly.

Two students (w2s on weak labels, ceiling on ground truth) share each Gaussian sample, exactly as the
w2sg engine does; link He3, isotropic data, batch 1, step w <- (w - (lr/d) G (x - z w)) / ||.||.
Also times the spectral initialization the usual way: covariance X^T X / n, then numpy.linalg.eigh.
Prints one JSON object. Run single-threaded (OPENBLAS_NUM_THREADS=1) to match the engine's one core.
"""
import argparse
import json
import time

import numpy as np


def he3(z):
    return z * z * z - 3.0 * z


def he3_deriv(z):
    return 3.0 * z * z - 3.0


def sgd(d, samples, lr, rho, seed):
    rng = np.random.default_rng(seed)
    theta = np.zeros(d)
    theta[0] = 1.0
    theta_w = np.zeros(d)
    theta_w[0] = rho
    theta_w[1] = np.sqrt(1.0 - rho * rho)
    w0 = rng.standard_normal(d)
    w0 -= w0[0] * theta
    w0 /= np.linalg.norm(w0)
    w0 = 0.5 * theta + np.sqrt(0.75) * w0
    W = np.stack([w0, w0.copy()])  # row 0: w2s, row 1: ceiling
    c = lr / d
    start = time.perf_counter()
    for _ in range(samples):
        x = rng.standard_normal(d)
        z = W @ x
        y = np.array([he3(theta_w @ x), he3(theta @ x)])
        g = (he3(z) - y) * he3_deriv(z)
        W -= (c * g)[:, None] * (x[None, :] - z[:, None] * W)
        W /= np.linalg.norm(W, axis=1, keepdims=True)
    elapsed = time.perf_counter() - start
    return samples / elapsed, float(W[0] @ theta)


def spectral(d, n, beta, seed):
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    X = rng.standard_normal((n, d))
    X[:, 0] *= np.sqrt(1.0 + beta)  # spike along theta* = e0
    t1 = time.perf_counter()
    C = X.T @ X / n
    t2 = time.perf_counter()
    vals, vecs = np.linalg.eigh(C)
    t3 = time.perf_counter()
    return {"sample_s": t1 - t0, "covariance_s": t2 - t1, "eigh_s": t3 - t2, "overlap": float(abs(vecs[0, -1]))}


def rng_floor(d, samples, seed):
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(samples):
        rng.standard_normal(d)
    return (time.perf_counter() - start) / (samples * d) * 1e9


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--rho", type=float, default=0.8)
    p.add_argument("--spectral-n", type=int, default=0)
    p.add_argument("--beta", type=float, default=3.0)
    a = p.parse_args()
    out = {"numpy": np.__version__, "d": a.d}
    out["samples_per_s"], out["m_final"] = sgd(a.d, a.samples, a.lr, a.rho, 1)
    out["rng_ns_per_normal"] = rng_floor(a.d, max(a.samples // 4, 100), 2)
    if a.spectral_n:
        out["spectral"] = spectral(a.d, a.spectral_n, a.beta, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
