//! The inner loops of the full engine: dot products and updates over d coordinates.
//!
//! Reductions use eight independent accumulators so the compiler can vectorize them without reassociating
//! floating-point sums behind our back: the summation order is fixed by the code, so results are
//! bit-identical on every machine and thread count.
//!
//! On x86-64 with AVX2 the same code is compiled a second time with 256-bit vectors and chosen at run
//! time. No FMA is enabled (Rust never contracts `a * b + c` on its own), so each lane performs the very
//! same IEEE multiplications and additions in the same order: the two paths are bit-identical (tested).

const LANES: usize = 8;

/// `(<u_j, x> for each j, <x, x>)` in one pass over `x`.
#[inline]
pub fn dots_and_norm<const N: usize>(us: [&[f64]; N], x: &[f64]) -> ([f64; N], f64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 support was just checked.
        return unsafe { dots_and_norm_avx2(us, x) };
    }
    dots_and_norm_portable(us, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dots_and_norm_avx2<const N: usize>(us: [&[f64]; N], x: &[f64]) -> ([f64; N], f64) {
    dots_and_norm_portable(us, x)
}

#[inline(always)]
fn dots_and_norm_portable<const N: usize>(us: [&[f64]; N], x: &[f64]) -> ([f64; N], f64) {
    let d = x.len();
    let mut acc = [[0.0f64; LANES]; N];
    let mut acc_xx = [0.0f64; LANES];
    let chunks = d / LANES;
    for c in 0..chunks {
        let base = c * LANES;
        let xc = &x[base..base + LANES];
        for l in 0..LANES {
            acc_xx[l] += xc[l] * xc[l];
        }
        for j in 0..N {
            let uc = &us[j][base..base + LANES];
            for l in 0..LANES {
                acc[j][l] += uc[l] * xc[l];
            }
        }
    }
    let mut out = [0.0; N];
    let mut xx = 0.0;
    for l in 0..LANES {
        xx += acc_xx[l];
        for j in 0..N {
            out[j] += acc[j][l];
        }
    }
    for i in chunks * LANES..d {
        xx += x[i] * x[i];
        for j in 0..N {
            out[j] += us[j][i] * x[i];
        }
    }
    (out, xx)
}

/// `<a, b>` with the same fixed-order vectorizable summation.
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    dots_and_norm([a], b).0[0]
}

/// `u_j ← u_j − b_j x` for each j.
#[inline]
pub fn subtract_scaled<const N: usize>(us: [&mut [f64]; N], b: [f64; N], x: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 support was just checked.
        return unsafe { subtract_scaled_avx2(us, b, x) };
    }
    subtract_scaled_portable(us, b, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn subtract_scaled_avx2<const N: usize>(us: [&mut [f64]; N], b: [f64; N], x: &[f64]) {
    subtract_scaled_portable(us, b, x)
}

#[inline(always)]
fn subtract_scaled_portable<const N: usize>(us: [&mut [f64]; N], b: [f64; N], x: &[f64]) {
    for (j, u) in us.into_iter().enumerate() {
        let bj = b[j];
        for (ui, xi) in u.iter_mut().zip(x) {
            *ui -= bj * xi;
        }
    }
}

/// `Σ_i x_i²`.
#[inline]
pub fn norm_squared(x: &[f64]) -> f64 {
    dots_and_norm::<0>([], x).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_paths_are_bit_identical_to_the_portable_ones() {
        for d in [1, 7, 8, 63, 1000, 1001] {
            let x: Vec<f64> = (0..d).map(|i| ((i * 7919) as f64).sin() * 3.0).collect();
            let u: Vec<f64> = (0..d).map(|i| ((i * 104729) as f64).cos() / 7.0).collect();
            let v: Vec<f64> = (0..d).map(|i| 1.0 / (i as f64 + 0.5)).collect();
            let portable = dots_and_norm_portable([&u, &v], &x);
            let dispatched = dots_and_norm([&u, &v], &x);
            assert_eq!(portable.0.map(f64::to_bits), dispatched.0.map(f64::to_bits));
            assert_eq!(portable.1.to_bits(), dispatched.1.to_bits());
            let (mut a, mut b) = (u.clone(), v.clone());
            let (mut c, mut e) = (u.clone(), v.clone());
            subtract_scaled([&mut a, &mut b], [0.3, -1.7], &x);
            subtract_scaled_portable([&mut c, &mut e], [0.3, -1.7], &x);
            assert_eq!(a, c);
            assert_eq!(b, e);
        }
    }

    #[test]
    fn matches_naive_sums() {
        let d = 37;
        let x: Vec<f64> = (0..d).map(|i| (i as f64 * 0.37).sin()).collect();
        let u: Vec<f64> = (0..d).map(|i| (i as f64 * 0.11).cos()).collect();
        let v: Vec<f64> = (0..d).map(|i| i as f64 / d as f64).collect();
        let ([du, dv], xx) = dots_and_norm([&u, &v], &x);
        let naive = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        assert!((du - naive(&u, &x)).abs() < 1e-12);
        assert!((dv - naive(&v, &x)).abs() < 1e-12);
        assert!((xx - naive(&x, &x)).abs() < 1e-12);
        let (mut a, mut b) = (u.clone(), v.clone());
        subtract_scaled([&mut a, &mut b], [0.5, -2.0], &x);
        for i in 0..d {
            assert_eq!(a[i], u[i] - 0.5 * x[i]);
            assert_eq!(b[i], v[i] + 2.0 * x[i]);
        }
    }
}
