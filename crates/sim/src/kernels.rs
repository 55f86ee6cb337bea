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
    use std::arch::x86_64::*;
    let d = x.len();
    for u in &us {
        assert_eq!(u.len(), d, "vectors of different lengths");
    }
    let body = d - d % LANES;
    // Lanes 0..4 and 4..8 of the portable accumulators, in two registers each: the same per-lane
    // multiply-then-add sequence, so the same bits.
    let zero = _mm256_setzero_pd();
    let mut acc = [[zero; 2]; N];
    let mut acc_xx = [zero; 2];
    let mut i = 0;
    while i < body {
        let x0 = _mm256_loadu_pd(x.as_ptr().add(i));
        let x1 = _mm256_loadu_pd(x.as_ptr().add(i + 4));
        acc_xx[0] = _mm256_add_pd(acc_xx[0], _mm256_mul_pd(x0, x0));
        acc_xx[1] = _mm256_add_pd(acc_xx[1], _mm256_mul_pd(x1, x1));
        for j in 0..N {
            let u = us[j].as_ptr();
            acc[j][0] = _mm256_add_pd(acc[j][0], _mm256_mul_pd(_mm256_loadu_pd(u.add(i)), x0));
            acc[j][1] = _mm256_add_pd(acc[j][1], _mm256_mul_pd(_mm256_loadu_pd(u.add(i + 4)), x1));
        }
        i += LANES;
    }
    let spill = |v: [__m256d; 2]| {
        let mut lanes = [0.0f64; LANES];
        _mm256_storeu_pd(lanes.as_mut_ptr(), v[0]);
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4), v[1]);
        lanes
    };
    let lanes_xx = spill(acc_xx);
    let lanes: [[f64; LANES]; N] = std::array::from_fn(|j| spill(acc[j]));
    let mut out = [0.0; N];
    let mut xx = 0.0;
    for l in 0..LANES {
        xx += lanes_xx[l];
        for j in 0..N {
            out[j] += lanes[j][l];
        }
    }
    for i in body..d {
        xx += x[i] * x[i];
        for j in 0..N {
            out[j] += us[j][i] * x[i];
        }
    }
    (out, xx)
}

#[inline(always)]
fn dots_and_norm_portable<const N: usize>(us: [&[f64]; N], x: &[f64]) -> ([f64; N], f64) {
    let d = x.len();
    for u in &us {
        assert_eq!(u.len(), d, "vectors of different lengths");
    }
    let body = d - d % LANES;
    let mut acc = [[0.0f64; LANES]; N];
    let mut acc_xx = [0.0f64; LANES];
    // Fixed-size chunks let the compiler keep each accumulator in registers without bounds checks.
    let mut u_chunks = us.map(|u| u[..body].chunks_exact(LANES));
    for xc in x[..body].chunks_exact(LANES) {
        let xc: &[f64; LANES] = xc.try_into().expect("exact chunk");
        for l in 0..LANES {
            acc_xx[l] += xc[l] * xc[l];
        }
        for j in 0..N {
            let uc: &[f64; LANES] = u_chunks[j]
                .next()
                .expect("same length")
                .try_into()
                .expect("exact chunk");
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
    for i in body..d {
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
    use std::arch::x86_64::*;
    let d = x.len();
    let body = d - d % 4;
    for (j, u) in us.into_iter().enumerate() {
        assert_eq!(u.len(), d, "vectors of different lengths");
        let bj = _mm256_set1_pd(b[j]);
        let p = u.as_mut_ptr();
        let mut i = 0;
        while i < body {
            let v = _mm256_sub_pd(
                _mm256_loadu_pd(p.add(i)),
                _mm256_mul_pd(bj, _mm256_loadu_pd(x.as_ptr().add(i))),
            );
            _mm256_storeu_pd(p.add(i), v);
            i += 4;
        }
        for i in body..d {
            u[i] -= b[j] * x[i];
        }
    }
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
