//! Online spherical SGD for one or several students that see the same samples.
//!
//! Step (docs/theory.md, section 2): `w ← (w − (lr/d) Σ_{i∈batch} ∇_S ℓ_i) / ‖·‖` with `∇_S ℓ = G (x − z w)`,
//! `G = (σ(z) − y) σ'(z)`, `z = w·x`. The learning rate is per sample: a batch applies the sum of its B
//! gradients, so time `τ = samples/d` and the d → ∞ ODE are the same for every batch size B ≪ d.
//!
//! The w2s and ceiling students are trained side by side on the same covariates (common random numbers):
//! one Gaussian draw feeds both, halving the dominant cost and making their difference less noisy.
//!
//! Each student is stored as `w = u / sqrt(ν)`. Normalization is then a scalar update (`ν` tracked in
//! closed form) and a batch-1 step costs one pass to read `u·x` and one to subtract `b x` from `u`.
//! `u` is re-normalized exactly every ~d samples so rounding never accumulates.

use crate::kernels;
use crate::link::Link;
use crate::model::{DataLaw, Direction, Labeler};
use crate::rng::SimRng;

/// A student on the unit sphere, stored as `w = u / sqrt(ν)`.
#[derive(Clone, Debug)]
pub struct Student {
    u: Vec<f64>,
    nu: f64,
}

impl Student {
    pub fn new(w: Vec<f64>) -> Self {
        let nu = kernels::norm_squared(&w);
        Self { u: w, nu }
    }

    /// The unit weight vector.
    pub fn weights(&self) -> Vec<f64> {
        let inv = 1.0 / self.nu.sqrt();
        self.u.iter().map(|x| x * inv).collect()
    }

    /// `<w, direction>`.
    pub fn overlap(&self, direction: &Direction) -> f64 {
        direction.dot(&self.u) / self.nu.sqrt()
    }

    fn renormalize(&mut self) {
        let nu = kernels::norm_squared(&self.u);
        let inv = 1.0 / nu.sqrt();
        self.u.iter_mut().for_each(|x| *x *= inv);
        self.nu = 1.0;
    }

    fn is_finite(&self) -> bool {
        self.nu.is_finite() && self.nu > 0.0
    }
}

/// What failed: a student's weights stopped being finite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("SGD diverged at sample {sample} (tau = {tau:.4}) for student {student}: the weights became non-finite; lower sgd.lr")]
pub struct Diverged {
    pub student: usize,
    pub sample: u64,
    pub tau: f64,
}

/// Hyper-parameters of a training run.
#[derive(Clone, Copy, Debug)]
pub struct SgdSettings {
    pub lr: f64,
    pub batch: usize,
}

/// Trains `N` students (all with link `link`, student `j` on labels from `labelers[j]`) on fresh samples
/// from `law`, calling `observe(samples_seen, students)` at each entry of `checkpoints` (sorted sample
/// counts; 0 is allowed). Checkpoints are rounded up to whole batches.
#[allow(clippy::too_many_arguments)] // each argument is a distinct concept of the run; a struct would only rename them
pub fn train<const N: usize>(
    students: &mut [Student; N],
    labelers: [&Labeler; N],
    link: &Link,
    law: &DataLaw,
    settings: SgdSettings,
    rng: &mut SimRng,
    checkpoints: &[u64],
    mut observe: impl FnMut(u64, &[Student; N]),
) -> Result<(), Diverged> {
    let d = law.d;
    let batch = settings.batch.max(1);
    let c = settings.lr / d as f64;
    let renormalize_every = (d / batch).max(1) as u64;
    let mut x = vec![0.0; d * batch];
    let mut grad_sum: Vec<Vec<f64>> = if batch > 1 {
        vec![vec![0.0; d]; N]
    } else {
        Vec::new()
    };
    let mut t: u64 = 0;
    let mut batches: u64 = 0;
    for &checkpoint in checkpoints {
        while t < checkpoint {
            if batch == 1 {
                step_single(students, &labelers, link, law, c, rng, &mut x);
            } else {
                step_batch(
                    students,
                    &labelers,
                    link,
                    law,
                    c,
                    rng,
                    &mut x,
                    &mut grad_sum,
                    batch,
                );
            }
            t += batch as u64;
            batches += 1;
            if batches.is_multiple_of(renormalize_every) {
                check_and_renormalize(students, t, d)?;
            }
        }
        check_and_renormalize(students, t, d)?;
        observe(t, students);
    }
    Ok(())
}

/// Stops with the step if a student's weights are no longer finite; else renormalizes them exactly.
fn check_and_renormalize<const N: usize>(
    students: &mut [Student; N],
    t: u64,
    d: usize,
) -> Result<(), Diverged> {
    for (j, s) in students.iter_mut().enumerate() {
        if !s.is_finite() || s.u.iter().any(|v| !v.is_finite()) {
            return Err(Diverged {
                student: j,
                sample: t,
                tau: t as f64 / d as f64,
            });
        }
        s.renormalize();
    }
    Ok(())
}

/// The per-sample factor `G = (σ(z) − y) σ'(z)`.
#[inline]
fn gradient_factor(link: &Link, z: f64, y: f64) -> f64 {
    let (f, df) = link.eval_and_deriv(z);
    (f - y) * df
}

#[inline]
fn step_single<const N: usize>(
    students: &mut [Student; N],
    labelers: &[&Labeler; N],
    link: &Link,
    law: &DataLaw,
    c: f64,
    rng: &mut SimRng,
    x: &mut [f64],
) {
    law.sample(rng, x);
    let us: [&[f64]; N] = std::array::from_fn(|j| students[j].u.as_slice());
    let (ux, xx) = kernels::dots_and_norm(us, x);
    let mut b = [0.0; N];
    for j in 0..N {
        let s = &mut students[j];
        let sqrt_nu = s.nu.sqrt();
        let z = ux[j] / sqrt_nu;
        let y = labelers[j].label(labelers[j].direction.dot(x), rng);
        let cg = c * gradient_factor(link, z, y);
        // w' ∝ (1 + cGz) w − cG x = ((1 + cGz)/√ν) (u − b x) with b = cG√ν / (1 + cGz).
        let k = 1.0 + cg * z;
        if k > 0.0 {
            b[j] = cg * sqrt_nu / k;
            s.nu = s.nu - 2.0 * b[j] * ux[j] + b[j] * b[j] * xx;
        } else {
            // A step so large it passes through the origin (absurd learning rates): do it explicitly.
            for (ui, xi) in s.u.iter_mut().zip(x.iter()) {
                *ui = k * *ui / sqrt_nu - cg * *xi;
            }
            s.nu = kernels::norm_squared(&s.u);
        }
    }
    let us: [&mut [f64]; N] = {
        let mut it = students.iter_mut();
        std::array::from_fn(|_| it.next().expect("N students").u.as_mut_slice())
    };
    kernels::subtract_scaled(us, b, x);
}

#[allow(clippy::too_many_arguments)]
fn step_batch<const N: usize>(
    students: &mut [Student; N],
    labelers: &[&Labeler; N],
    link: &Link,
    law: &DataLaw,
    c: f64,
    rng: &mut SimRng,
    x: &mut [f64],
    grad_sum: &mut [Vec<f64>],
    batch: usize,
) {
    let d = law.d;
    for row in x.chunks_exact_mut(d) {
        law.sample(rng, row);
    }
    for j in 0..N {
        let s = &students[j];
        let sqrt_nu = s.nu.sqrt();
        let gs = &mut grad_sum[j];
        gs.iter_mut().for_each(|v| *v = 0.0);
        let mut gz = 0.0;
        for i in 0..batch {
            let row = &x[i * d..(i + 1) * d];
            let z = kernels::dot(&s.u, row) / sqrt_nu;
            let y = labelers[j].label(labelers[j].direction.dot(row), rng);
            let g = gradient_factor(link, z, y);
            gz += g * z;
            gs.iter_mut().zip(row).for_each(|(a, r)| *a += g * r);
        }
        // w' ∝ (1 + c Σ G z) w − c Σ G x.
        let k = 1.0 + c * gz;
        let s = &mut students[j];
        let inv = 1.0 / sqrt_nu;
        for (ui, gi) in s.u.iter_mut().zip(gs.iter()) {
            *ui = k * *ui * inv - c * gi;
        }
        s.nu = kernels::norm_squared(&s.u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{target_direction, DataLaw};

    #[test]
    fn lazy_normalization_matches_the_explicit_step() {
        // One batch-1 step through the lazy path must equal w' = ((1+cGz) w − cG x)/‖·‖ computed directly.
        let d = 50;
        let link = Link::Hermite(2);
        let labeler = Labeler {
            link: link.clone(),
            direction: target_direction(),
            noise: 0.0,
        };
        let law = DataLaw::isotropic(d);
        let mut rng = SimRng::from_seed(11);
        let w0 = rng.unit_vector(d);
        let mut students = [Student::new(w0.clone())];
        let settings = SgdSettings { lr: 0.7, batch: 1 };
        let mut sample_rng = SimRng::from_seed(99);
        let mut replay = sample_rng.clone();
        train(
            &mut students,
            [&labeler],
            &link,
            &law,
            settings,
            &mut sample_rng,
            &[1],
            |_, _| {},
        )
        .unwrap();
        let mut x = vec![0.0; d];
        law.sample(&mut replay, &mut x);
        let z: f64 = w0.iter().zip(&x).map(|(a, b)| a * b).sum();
        let g = (link.eval(z) - link.eval(x[0])) * link.deriv(z);
        let c = 0.7 / d as f64;
        let mut w1: Vec<f64> = w0
            .iter()
            .zip(&x)
            .map(|(w, xi)| (1.0 + c * g * z) * w - c * g * xi)
            .collect();
        let n = w1.iter().map(|v| v * v).sum::<f64>().sqrt();
        w1.iter_mut().for_each(|v| *v /= n);
        let got = students[0].weights();
        for i in 0..d {
            assert!((got[i] - w1[i]).abs() < 1e-13);
        }
    }

    #[test]
    fn batch_step_equals_sum_of_gradients() {
        let d = 40;
        let link = Link::Tanh;
        let labeler = Labeler {
            link: link.clone(),
            direction: target_direction(),
            noise: 0.0,
        };
        let law = DataLaw::isotropic(d);
        let w0 = SimRng::from_seed(1).unit_vector(d);
        let mut students = [Student::new(w0.clone())];
        let mut rng = SimRng::from_seed(2);
        let mut replay = rng.clone();
        train(
            &mut students,
            [&labeler],
            &link,
            &law,
            SgdSettings { lr: 2.0, batch: 3 },
            &mut rng,
            &[3],
            |_, _| {},
        )
        .unwrap();
        let c = 2.0 / d as f64;
        let mut step = w0.clone();
        let mut gz = 0.0;
        let mut gx = vec![0.0; d];
        for _ in 0..3 {
            let mut x = vec![0.0; d];
            law.sample(&mut replay, &mut x);
            let z: f64 = w0.iter().zip(&x).map(|(a, b)| a * b).sum();
            let g = (link.eval(z) - link.eval(x[0])) * link.deriv(z);
            gz += g * z;
            gx.iter_mut().zip(&x).for_each(|(a, b)| *a += g * b);
        }
        step.iter_mut()
            .zip(&gx)
            .for_each(|(w, g)| *w = (1.0 + c * gz) * *w - c * g);
        let n = step.iter().map(|v| v * v).sum::<f64>().sqrt();
        let got = students[0].weights();
        for i in 0..d {
            assert!((got[i] - step[i] / n).abs() < 1e-13);
        }
    }

    #[test]
    fn divergence_is_reported_with_the_step() {
        let d = 20;
        let link = Link::Hermite(4);
        let labeler = Labeler {
            link: link.clone(),
            direction: target_direction(),
            noise: 0.0,
        };
        let mut students = [Student::new(SimRng::from_seed(4).unit_vector(d))];
        let result = train(
            &mut students,
            [&labeler],
            &link,
            &DataLaw::isotropic(d),
            SgdSettings {
                lr: 1e300,
                batch: 1,
            },
            &mut SimRng::from_seed(5),
            &[1000],
            |_, _| {},
        );
        let err = result.unwrap_err();
        assert!(
            err.sample <= 1000 && err.to_string().contains("diverged at sample"),
            "{err}"
        );
    }
}
