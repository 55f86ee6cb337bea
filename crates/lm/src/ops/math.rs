//! Elementwise math shared by the ops: exp, erf-GELU, tanh-GELU, SiLU and their derivatives, and the
//! shifted exponential sum of a softmax row.
//!
//! exp and erf are polynomials (Cephes `expf`, relative error ~2e-7; Abramowitz & Stegun 7.1.26 for
//! erf, absolute error ≤ 1.5e-7, the formula of PyTorch's vectorized `erf`) written so that LLVM
//! vectorizes them; [`super::dispatch_avx2`] compiles each slice function for the baseline and for
//! AVX2 + FMA and picks at run time. No FMA is written explicitly, so both builds give the same bits.
//! libm's scalar `expf`/`erff` were 15–20 % of a training step.

use super::dispatch_avx2;
use super::linear::Activation;

/// e^x for x ≤ 88.7 (Cephes `expf` polynomial, relative error ~2e-7); underflows to ~1e-38, not 0.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5·2²³ trick (no SSE4.1 `round` needed).
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

const INV_SQRT_2PI: f32 = 0.398_942_3;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU (erf) and its derivative at z, sharing one exponential (e^{−z²/2} is both erf's and the
/// Gaussian density's).
#[inline(always)]
fn gelu_erf_and_grad(z: f32) -> (f32, f32) {
    let x = z * std::f32::consts::FRAC_1_SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let e = exp_approx(-a * a);
    let erf_a = 1.0 - poly * e;
    let cdf = if x < 0.0 { 1.0 - erf_a } else { 1.0 + erf_a };
    (cdf * 0.5 * z, 0.5 * cdf + z * INV_SQRT_2PI * e)
}

/// tanh-GELU and its derivative.
#[inline(always)]
fn gelu_tanh_and_grad(x: f32) -> (f32, f32) {
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 − 2 / (e^{2u} + 1), stable at both ends.
    let th = 1.0 - 2.0 / (exp_approx(2.0 * u) + 1.0);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x);
    (
        0.5 * x * (1.0 + th),
        0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du,
    )
}

/// σ(x) = 1 / (1 + e^{−x}).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}

#[inline(always)]
fn act_and_grad(x: f32, act: Activation) -> (f32, f32) {
    match act {
        Activation::GeluErf => gelu_erf_and_grad(x),
        Activation::GeluTanh => gelu_tanh_and_grad(x),
        Activation::Relu => {
            if x > 0.0 {
                (x, 1.0)
            } else {
                (0.0, 0.0)
            }
        }
        Activation::Silu => {
            let s = sigmoid(x);
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
    }
}

dispatch_avx2!(
    /// Applies an activation in place (one loop per activation, so that each vectorizes).
    pub(crate) fn act_slice(xs: &mut [f32], act: Activation) {
        match act {
            Activation::GeluErf => xs.iter_mut().for_each(|x| *x = gelu_erf_and_grad(*x).0),
            Activation::GeluTanh => xs.iter_mut().for_each(|x| *x = gelu_tanh_and_grad(*x).0),
            Activation::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
            Activation::Silu => xs.iter_mut().for_each(|x| *x *= sigmoid(*x)),
        }
    }
);

dispatch_avx2!(
    /// Applies an activation in place and writes its derivative at the pre-activation into `d`.
    pub(crate) fn act_grad_slice(xs: &mut [f32], d: &mut [f32], act: Activation) {
        match act {
            Activation::GeluErf => xs.iter_mut().zip(d.iter_mut()).for_each(|(x, d)| {
                (*x, *d) = gelu_erf_and_grad(*x);
            }),
            Activation::GeluTanh => xs.iter_mut().zip(d.iter_mut()).for_each(|(x, d)| {
                (*x, *d) = gelu_tanh_and_grad(*x);
            }),
            Activation::Relu => xs.iter_mut().zip(d.iter_mut()).for_each(|(x, d)| {
                (*x, *d) = act_and_grad(*x, Activation::Relu);
            }),
            Activation::Silu => xs.iter_mut().zip(d.iter_mut()).for_each(|(x, d)| {
                (*x, *d) = act_and_grad(*x, Activation::Silu);
            }),
        }
    }
);

dispatch_avx2!(
    /// Maximum, then `row ← exp(row − max)` and its sum (in 8 fixed lanes, so it vectorizes and stays
    /// the same for every thread count). Returns (max, sum).
    pub(crate) fn exp_shifted_sum(row: &mut [f32]) -> (f32, f32) {
        let mut m8 = [f32::NEG_INFINITY; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                m8[i] = m8[i].max(c[i]);
            }
        }
        let max = tail.iter().fold(
            m8.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
            |m, &v| m.max(v),
        );
        row.iter_mut().for_each(|x| *x = exp_approx(*x - max));
        let mut s8 = [0f32; 8];
        let chunks = row.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                s8[i] += c[i];
            }
        }
        let sum = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
        (max, tail.iter().fold(sum, |s, &v| s + v))
    }
);

dispatch_avx2!(
    /// silu(gate) · up for one row [up | gate] of width 2·inter, into `dst` (width inter).
    pub(crate) fn swiglu_row(src: &[f32], dst: &mut [f32]) {
        let (up, gate) = src.split_at(dst.len());
        for ((d, &u), &g) in dst.iter_mut().zip(up).zip(gate) {
            *d = g * sigmoid(g) * u;
        }
    }
);

dispatch_avx2!(
    /// Gradient of [`swiglu_row`]: from the output gradient `g` (width inter) into `dst` = [dup | dgate].
    pub(crate) fn swiglu_row_grad(src: &[f32], g: &[f32], dst: &mut [f32]) {
        let inter = g.len();
        let (up, gate) = src.split_at(inter);
        let (dup, dgate) = dst.split_at_mut(inter);
        for i in 0..inter {
            let s = sigmoid(gate[i]);
            let silu = gate[i] * s;
            dup[i] = g[i] * silu;
            dgate[i] = g[i] * up[i] * (s * (1.0 + gate[i] * (1.0 - s)));
        }
    }
);
