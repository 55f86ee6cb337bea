//! The two inner loops of probe training, on f32 features with f64 accumulation: dot products of rows
//! with a weight vector, and adding multiples of rows to a gradient, four rows at a time.
//!
//! Why by hand: the loops dominate training time (a 10⁴ × 1024 fit reads the matrix hundreds of times),
//! and a plain `sum()` is a strict left-to-right f64 chain that the compiler may not vectorize. A dot
//! product keeps 8 independent fused multiply-add accumulators combined in a fixed tree, which
//! vectorizes; four rows share each load of the weight vector, and the gradient update adds four rows'
//! contributions per load and store of the gradient.
//!
//! Determinism: every operation is an IEEE fused multiply-add (`f64::mul_add`) or add in a fixed
//! order. The AVX2+FMA versions compile the same source for wider registers; on a CPU without FMA the
//! portable version computes the same correctly rounded fused operations in software (slowly), so the
//! bits depend neither on the CPU, nor the thread count, nor the call site. The 4-row dot returns
//! exactly the single-row dot of each row.

#[inline(always)]
fn dot_body(x: &[f32], v: &[f64]) -> f64 {
    debug_assert_eq!(x.len(), v.len());
    let mut acc = [0.0f64; 8];
    let xs = x.chunks_exact(8);
    let vs = v.chunks_exact(8);
    let (xr, vr) = (xs.remainder(), vs.remainder());
    for (xc, vc) in xs.zip(vs) {
        for l in 0..8 {
            acc[l] = (xc[l] as f64).mul_add(vc[l], acc[l]);
        }
    }
    let mut tail = 0.0f64;
    for (a, b) in xr.iter().zip(vr) {
        tail = (*a as f64).mul_add(*b, tail);
    }
    combine(&acc) + tail
}

#[inline(always)]
fn combine(acc: &[f64; 8]) -> f64 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[inline(always)]
fn dot4_body(x: [&[f32]; 4], v: &[f64]) -> [f64; 4] {
    let k = v.len();
    let mut acc = [[0.0f64; 8]; 4];
    let full = k - k % 8;
    let mut j = 0;
    while j < full {
        let vc = &v[j..j + 8];
        for r in 0..4 {
            let xc = &x[r][j..j + 8];
            for l in 0..8 {
                acc[r][l] = (xc[l] as f64).mul_add(vc[l], acc[r][l]);
            }
        }
        j += 8;
    }
    let mut out = [0.0f64; 4];
    for r in 0..4 {
        let mut tail = 0.0f64;
        for jj in full..k {
            tail = (x[r][jj] as f64).mul_add(v[jj], tail);
        }
        out[r] = combine(&acc[r]) + tail;
    }
    out
}

#[inline(always)]
fn axpy_body(a: f64, x: &[f32], y: &mut [f64]) {
    debug_assert_eq!(x.len(), y.len());
    for (yj, xj) in y.iter_mut().zip(x) {
        *yj = a.mul_add(*xj as f64, *yj);
    }
}

#[inline(always)]
fn axpy4_body(a: [f64; 4], x: [&[f32]; 4], y: &mut [f64]) {
    let k = y.len();
    let (x0, x1, x2, x3) = (&x[0][..k], &x[1][..k], &x[2][..k], &x[3][..k]);
    for j in 0..k {
        let mut t = a[0].mul_add(x0[j] as f64, y[j]);
        t = a[1].mul_add(x1[j] as f64, t);
        t = a[2].mul_add(x2[j] as f64, t);
        y[j] = a[3].mul_add(x3[j] as f64, t);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(x: &[f32], v: &[f64]) -> f64 {
        super::dot_body(x, v)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4(x: [&[f32]; 4], v: &[f64]) -> [f64; 4] {
        super::dot4_body(x, v)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(a: f64, x: &[f32], y: &mut [f64]) {
        super::axpy_body(a, x, y)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy4(a: [f64; 4], x: [&[f32]; 4], y: &mut [f64]) {
        super::axpy4_body(a, x, y)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn fast() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Σ_j x_j v_j with the fixed 8-lane summation order.
#[inline]
pub(crate) fn dot(x: &[f32], v: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time, cached by std).
        return unsafe { simd::dot(x, v) };
    }
    dot_body(x, v)
}

/// The dots of four rows (each row's length must be v's): bit-identical to four calls of `dot`.
#[inline]
pub(crate) fn dot4(x: [&[f32]; 4], v: &[f64]) -> [f64; 4] {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: as in `dot`.
        return unsafe { simd::dot4(x, v) };
    }
    dot4_body(x, v)
}

/// y += a x.
#[inline]
pub(crate) fn axpy(a: f64, x: &[f32], y: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: as in `dot`.
        return unsafe { simd::axpy(a, x, y) };
    }
    axpy_body(a, x, y)
}

/// y += a₀x₀ + a₁x₁ + a₂x₂ + a₃x₃, accumulated in that order per element.
#[inline]
pub(crate) fn axpy4(a: [f64; 4], x: [&[f32]; 4], y: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if fast() {
        // SAFETY: as in `dot`.
        return unsafe { simd::axpy4(a, x, y) };
    }
    axpy4_body(a, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_matches_portable_bits_and_exact_sums() {
        // Small integers: every partial sum is exact, so the result is the exact dot product.
        let x: Vec<f32> = (0..37).map(|i| (i % 7) as f32 - 3.0).collect();
        let v: Vec<f64> = (0..37).map(|i| (i % 5) as f64 - 2.0).collect();
        let exact: f64 = x.iter().zip(&v).map(|(a, b)| *a as f64 * b).sum();
        assert_eq!(dot(&x, &v), exact);
        // Irregular values: the dispatched path gives the portable path's bits, and the 4-row dot
        // gives the single-row dots.
        for k in [1usize, 7, 8, 9, 1031] {
            let rows: Vec<Vec<f32>> = (0..4)
                .map(|r| (0..k).map(|i| ((i * 3 + r) as f32 * 0.37).sin()).collect())
                .collect();
            let v: Vec<f64> = (0..k).map(|i| ((i as f64) * 0.11).cos()).collect();
            let x4 = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let d4 = dot4(x4, &v);
            assert_eq!(d4, dot4_body(x4, &v));
            for r in 0..4 {
                assert_eq!(d4[r].to_bits(), dot(&rows[r], &v).to_bits());
                assert_eq!(
                    dot(&rows[r], &v).to_bits(),
                    dot_body(&rows[r], &v).to_bits()
                );
            }
            let mut y1 = v.clone();
            let mut y2 = v.clone();
            axpy(0.3, &rows[0], &mut y1);
            axpy_body(0.3, &rows[0], &mut y2);
            assert_eq!(y1, y2);
            let a = [0.3, -1.25, 0.5, 2.0];
            let mut y3 = v.clone();
            let mut y4 = v.clone();
            axpy4(a, x4, &mut y3);
            axpy4_body(a, x4, &mut y4);
            assert_eq!(y3, y4);
            // Against the plain formula (rounding differs by a few ulps at most).
            for j in 0..k {
                let want = v[j] + (0..4).map(|r| a[r] * rows[r][j] as f64).sum::<f64>();
                assert!((y3[j] - want).abs() < 1e-14, "{} vs {want}", y3[j]);
            }
        }
    }
}
