//! Feature standardization fitted on the training set: x̃_j = (x_j − μ_j)/σ_j with the mean and the
//! population standard deviation (ddof = 0, as scikit-learn's StandardScaler) of the training rows.
//!
//! Why: language-model features have wildly different scales (a few "massive activation" dimensions
//! hundreds of times larger than the rest); without standardization a single L2 penalty means different
//! things per dimension and L-BFGS crawls. Edge case: a constant column (σ = 0 exactly) gets σ = 1, so it
//! standardizes to 0 and its weight stays 0 under the penalty. Sums are f64 and sequential in row order,
//! so the statistics are deterministic.

use crate::features::Features;

/// Per-feature mean and scale fitted on a training set.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    /// μ_j.
    pub mean: Vec<f64>,
    /// σ_j (1 for a constant column).
    pub scale: Vec<f64>,
}

impl Standardizer {
    /// Fits mean and scale by two passes in f64.
    pub fn fit(x: &Features<'_>) -> Self {
        let (n, k) = (x.rows(), x.cols());
        let mut mean = vec![0.0f64; k];
        for i in 0..n {
            for (m, &v) in mean.iter_mut().zip(x.row(i)) {
                *m += v as f64;
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let mut var = vec![0.0f64; k];
        for i in 0..n {
            for ((s, &v), m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
                let d = v as f64 - m;
                *s += d * d;
            }
        }
        let scale = var
            .into_iter()
            .map(|s| {
                let sd = (s / n as f64).sqrt();
                if sd > 0.0 {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer { mean, scale }
    }

    /// The weights and bias that act on raw features as `w` and `b` act on standardized ones:
    /// w·x̃ + b = v·x + c with v_j = w_j/σ_j and c = b − Σ μ_j v_j.
    pub fn fold(&self, w: &[f64], b: f64) -> (Vec<f64>, f64) {
        let v: Vec<f64> = w.iter().zip(&self.scale).map(|(w, s)| w / s).collect();
        let c = b - v.iter().zip(&self.mean).map(|(v, m)| v * m).sum::<f64>();
        (v, c)
    }

    /// The gradient with respect to standardized weights from Σ_i r_i x_i (raw features) and Σ_i r_i:
    /// ∂/∂w_j = (Σ_i r_i x_ij − μ_j Σ_i r_i)/σ_j.
    pub fn unfold_gradient(&self, raw: &[f64], r_sum: f64, out: &mut [f64]) {
        for j in 0..out.len() {
            out[j] = (raw[j] - self.mean[j] * r_sum) / self.scale[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_statistics() {
        // Column 0: 1, 2, 3 → mean 2, population sd sqrt(2/3). Column 1 constant → scale 1.
        let data = [1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0];
        let x = Features::new(&data, 3, 2).unwrap();
        let s = Standardizer::fit(&x);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert!((s.scale[0] - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(s.scale[1], 1.0);
        // Folding: w·x̃ + b equals v·x + c on every row.
        let (w, b) = ([0.7, -0.3], 0.25);
        let (v, c) = s.fold(&w, b);
        for i in 0..3 {
            let row = x.row(i);
            let direct: f64 = (0..2)
                .map(|j| (row[j] as f64 - s.mean[j]) / s.scale[j] * w[j])
                .sum::<f64>()
                + b;
            let folded: f64 = (0..2).map(|j| row[j] as f64 * v[j]).sum::<f64>() + c;
            assert!((direct - folded).abs() < 1e-12);
        }
    }
}
