//! Gaussian expectations by quadrature: the exact side of every comparison with simulation.
//!
//! Two building blocks:
//! - Gauss–Hermite rules for the standard normal weight (probabilists' convention, weights summing to 1),
//!   computed by Golub–Welsch from the Hermite Jacobi matrix. An `n`-point rule is exact for polynomials of
//!   degree `2n − 1`, so polynomial links get exact expectations with a handful of nodes.
//! - Composite Gauss–Legendre on `[−L, L]` split at the integrand's kinks, for links that are only
//!   piecewise smooth (relu, |z|, sign). Gauss–Hermite converges slowly across a kink; splitting there
//!   restores exponential convergence. The normal tail beyond `L = 10` (mass ~1e−23) is dropped.
//!
//! Two-dimensional expectations over a correlated Gaussian pair `(u, v)` write `u = a z₁`,
//! `v = b z₁ + c z₂` and integrate `z₂` inside `z₁`, so each variable's kinks can be split exactly.

use std::sync::OnceLock;

use crate::tridiagonal::tridiagonal_eigen;

/// Nodes and weights of a quadrature rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
}

/// Golub–Welsch: nodes are eigenvalues of the Jacobi matrix, weights `mass · (first eigenvector comp.)²`.
fn golub_welsch(diag: &[f64], off: &[f64], mass: f64) -> Rule {
    let eig = tridiagonal_eigen(diag, off).expect("Jacobi matrices are finite");
    let weights = (0..eig.n)
        .map(|j| mass * eig.vector(j)[0].powi(2))
        .collect();
    Rule {
        nodes: eig.values,
        weights,
    }
}

/// `n`-point Gauss–Hermite rule for `E[f(z)]`, `z ~ N(0,1)`.
pub fn gauss_hermite(n: usize) -> Rule {
    // Monic probabilists' Hermite recurrence: He_{k+1} = z He_k − k He_{k−1}.
    let off: Vec<f64> = (1..n).map(|k| (k as f64).sqrt()).collect();
    let mut rule = golub_welsch(&vec![0.0; n], &off, 1.0);
    // Symmetrize: removes the tiny asymmetry of the eigen-solver so odd moments vanish to rounding.
    for i in 0..n / 2 {
        let j = n - 1 - i;
        let x = 0.5 * (rule.nodes[j] - rule.nodes[i]);
        let w = 0.5 * (rule.weights[i] + rule.weights[j]);
        rule.nodes[i] = -x;
        rule.nodes[j] = x;
        rule.weights[i] = w;
        rule.weights[j] = w;
    }
    if n % 2 == 1 {
        rule.nodes[n / 2] = 0.0;
    }
    rule
}

/// `n`-point Gauss–Legendre rule on `[−1, 1]`.
pub fn gauss_legendre(n: usize) -> Rule {
    let off: Vec<f64> = (1..n)
        .map(|k| {
            let k = k as f64;
            k / (4.0 * k * k - 1.0).sqrt()
        })
        .collect();
    golub_welsch(&vec![0.0; n], &off, 2.0)
}

/// Nodes of the default Gauss–Hermite rule: exact for polynomials up to degree 127.
pub const HERMITE_NODES: usize = 64;
const LEGENDRE_NODES: usize = 16;
const TAIL: f64 = 10.0;
const PANEL_WIDTH: f64 = 2.5;

fn default_hermite() -> &'static Rule {
    static RULE: OnceLock<Rule> = OnceLock::new();
    RULE.get_or_init(|| gauss_hermite(HERMITE_NODES))
}

fn small_hermite(n: usize) -> &'static Rule {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    let rules = RULES.get_or_init(|| (1..=HERMITE_NODES).map(gauss_hermite).collect());
    &rules[n.clamp(1, HERMITE_NODES) - 1]
}

fn legendre() -> &'static Rule {
    static RULE: OnceLock<Rule> = OnceLock::new();
    RULE.get_or_init(|| gauss_legendre(LEGENDRE_NODES))
}

/// What a quadrature needs to know about an integrand along one standard-normal variable.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A polynomial of at most this degree: Gauss–Hermite with just enough nodes is exact.
    Polynomial(usize),
    /// Smooth (analytic near the real line): the default Gauss–Hermite rule.
    Smooth,
    /// Smooth except at these points: composite Gauss–Legendre split there.
    Kinks(Vec<f64>),
}

/// Calls `visit(z, weight)` for the nodes of a rule for `E[f(z)]`, `z ~ N(0,1)`, suited to `shape`.
pub fn for_each_node(shape: &Shape, mut visit: impl FnMut(f64, f64)) {
    match shape {
        Shape::Polynomial(deg) => {
            let rule = small_hermite(deg / 2 + 1);
            for (&z, &w) in rule.nodes.iter().zip(&rule.weights) {
                visit(z, w);
            }
        }
        Shape::Smooth => {
            let rule = default_hermite();
            for (&z, &w) in rule.nodes.iter().zip(&rule.weights) {
                visit(z, w);
            }
        }
        Shape::Kinks(points) => {
            let mut cuts: Vec<f64> = points.iter().copied().filter(|p| p.abs() < TAIL).collect();
            cuts.push(-TAIL);
            cuts.push(TAIL);
            cuts.sort_by(f64::total_cmp);
            cuts.dedup();
            let gl = legendre();
            let norm = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
            for interval in cuts.windows(2) {
                let (lo, hi) = (interval[0], interval[1]);
                let panels = ((hi - lo) / PANEL_WIDTH).ceil().max(1.0) as usize;
                let h = (hi - lo) / panels as f64;
                for p in 0..panels {
                    let mid = lo + (p as f64 + 0.5) * h;
                    for (&t, &w) in gl.nodes.iter().zip(&gl.weights) {
                        let z = mid + 0.5 * h * t;
                        visit(z, w * 0.5 * h * norm * (-0.5 * z * z).exp());
                    }
                }
            }
        }
    }
}

/// `E[f(z)]` for `z ~ N(0,1)`.
pub fn normal_expectation(shape: &Shape, mut f: impl FnMut(f64) -> f64) -> f64 {
    let mut acc = 0.0;
    for_each_node(shape, |z, w| acc += w * f(z));
    acc
}

/// A centred bivariate Gaussian `(u, v)` by its covariance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bivariate {
    pub var_u: f64,
    pub var_v: f64,
    pub cov: f64,
}

impl Bivariate {
    /// Unit variances, correlation `r`.
    pub fn correlated(r: f64) -> Self {
        Self {
            var_u: 1.0,
            var_v: 1.0,
            cov: r,
        }
    }
}

/// How an integrand `F(u, v)` behaves along `u` and along `v`, in the variables' own units
/// (kinks are given as values of `u` or `v`, not of the standard normals behind them).
#[derive(Clone, Debug)]
pub struct Shape2 {
    pub u: Shape,
    pub v: Shape,
}

fn scaled(shape: &Shape, offset: f64, scale: f64) -> Shape {
    match shape {
        Shape::Kinks(points) => Shape::Kinks(points.iter().map(|p| (p - offset) / scale).collect()),
        other => other.clone(),
    }
}

/// `E[F(u, v)]` for each of the `K` outputs of `f`, exact up to quadrature error (exact for polynomials).
pub fn bivariate_expectation<const K: usize>(
    law: Bivariate,
    shape: &Shape2,
    mut f: impl FnMut(f64, f64) -> [f64; K],
) -> [f64; K] {
    let a = law.var_u.max(0.0).sqrt();
    let mut acc = [0.0; K];
    if a == 0.0 {
        // u ≡ 0: a one-dimensional expectation over v.
        let sv = law.var_v.max(0.0).sqrt();
        if sv == 0.0 {
            return f(0.0, 0.0);
        }
        for_each_node(&scaled(&shape.v, 0.0, sv), |z, w| {
            let out = f(0.0, sv * z);
            for k in 0..K {
                acc[k] += w * out[k];
            }
        });
        return acc;
    }
    let b = law.cov / a;
    let c2 = law.var_v - b * b;
    let c = if c2 > 1e-14 * law.var_v.max(1e-300) {
        c2.sqrt()
    } else {
        0.0
    };
    // Along z1 the outer integrand is a polynomial of the summed degree when both are, and kinked at u's
    // kinks. v's kinks are smoothed by the inner integral over a width c/|b| in z1; splitting the outer
    // rule at their centre keeps it accurate when that width is small (and exact when c = 0).
    let v_in_z1 = if b != 0.0 {
        scaled(&shape.v, 0.0, b)
    } else {
        Shape::Smooth
    };
    let outer = merge(&scaled(&shape.u, 0.0, a), &v_in_z1);
    for_each_node(&outer, |z1, w1| {
        let u = a * z1;
        if c == 0.0 {
            let out = f(u, b * z1);
            for k in 0..K {
                acc[k] += w1 * out[k];
            }
            return;
        }
        let inner = scaled(&shape.v, b * z1, c);
        for_each_node(&inner, |z2, w2| {
            let out = f(u, b * z1 + c * z2);
            let w = w1 * w2;
            for k in 0..K {
                acc[k] += w * out[k];
            }
        });
    });
    acc
}

/// The shape of a product of two functions of the same variable.
pub fn merge(a: &Shape, b: &Shape) -> Shape {
    match (a, b) {
        (Shape::Polynomial(p), Shape::Polynomial(q)) => Shape::Polynomial(p + q),
        (Shape::Kinks(p), Shape::Kinks(q)) => Shape::Kinks(p.iter().chain(q).copied().collect()),
        (Shape::Kinks(p), _) | (_, Shape::Kinks(p)) => Shape::Kinks(p.clone()),
        _ => Shape::Smooth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double_factorial_moment(k: u32) -> f64 {
        // E[z^k] = (k-1)!! for even k, 0 for odd k.
        if k % 2 == 1 {
            return 0.0;
        }
        (1..k).step_by(2).map(|j| j as f64).product()
    }

    #[test]
    fn hermite_rule_is_exact_for_moments() {
        for n in [5, 20, 64] {
            let rule = gauss_hermite(n);
            for k in 0..(2 * n as u32).min(30) {
                let m: f64 = rule
                    .nodes
                    .iter()
                    .zip(&rule.weights)
                    .map(|(z, w)| w * z.powi(k as i32))
                    .sum();
                let want = double_factorial_moment(k);
                // Odd moments cancel between large symmetric terms: scale the tolerance by E[z^2k]^(1/2).
                let scale = double_factorial_moment(2 * k).sqrt().max(1.0);
                assert!(
                    (m - want).abs() <= 1e-12 * scale,
                    "n={n} k={k}: {m} vs {want}"
                );
            }
        }
    }

    #[test]
    fn legendre_rule_integrates_polynomials() {
        let rule = gauss_legendre(16);
        for k in 0..31 {
            let got: f64 = rule
                .nodes
                .iter()
                .zip(&rule.weights)
                .map(|(x, w)| w * x.powi(k))
                .sum();
            let want = if k % 2 == 1 {
                0.0
            } else {
                2.0 / (k as f64 + 1.0)
            };
            assert!((got - want).abs() < 1e-13, "k={k}");
        }
    }

    #[test]
    fn kinked_rule_matches_closed_forms() {
        // E[relu(z)] = 1/sqrt(2 pi), E[|z|^3] = 2 sqrt(2/pi), E[relu(z - 0.7)] = phi(0.7) - 0.7 Q(0.7).
        let kinks = Shape::Kinks(vec![0.0]);
        let relu = normal_expectation(&kinks, |z| z.max(0.0));
        assert!((relu - 1.0 / (2.0 * std::f64::consts::PI).sqrt()).abs() < 1e-13);
        let abs3 = normal_expectation(&kinks, |z| z.abs().powi(3));
        assert!((abs3 - 2.0 * (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-12);
        let shifted = normal_expectation(&Shape::Kinks(vec![0.7]), |z| (z - 0.7).max(0.0));
        let phi = (-0.245f64).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let q = 0.5 * erfc_series(0.7 / 2f64.sqrt());
        assert!((shifted - (phi - 0.7 * q)).abs() < 1e-12, "{shifted}");
    }

    /// erfc by the Taylor series of erf: exact to rounding for the small arguments used here.
    fn erfc_series(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-18 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn bivariate_moments() {
        // E[u^2 v^2] = var_u var_v + 2 cov^2 (Isserlis).
        let law = Bivariate {
            var_u: 1.5,
            var_v: 0.7,
            cov: 0.4,
        };
        let shape = Shape2 {
            u: Shape::Polynomial(2),
            v: Shape::Polynomial(2),
        };
        let [m] = bivariate_expectation(law, &shape, |u, v| [u * u * v * v]);
        assert!((m - (1.5 * 0.7 + 2.0 * 0.16)).abs() < 1e-12);
        // Orthant probability P(u > 0, v > 0) = 1/4 + asin(r)/(2 pi), with kinks split exactly.
        let r: f64 = 0.6;
        let shape = Shape2 {
            u: Shape::Kinks(vec![0.0]),
            v: Shape::Kinks(vec![0.0]),
        };
        let [p] = bivariate_expectation(Bivariate::correlated(r), &shape, |u, v| {
            [f64::from(u > 0.0 && v > 0.0)]
        });
        assert!(
            (p - (0.25 + r.asin() / (2.0 * std::f64::consts::PI))).abs() < 1e-12,
            "{p}"
        );
    }

    #[test]
    fn degenerate_bivariate_is_one_dimensional() {
        let shape = Shape2 {
            u: Shape::Polynomial(2),
            v: Shape::Polynomial(2),
        };
        let [m] = bivariate_expectation(Bivariate::correlated(1.0), &shape, |u, v| [u * v]);
        assert!((m - 1.0).abs() < 1e-12);
        let [m] = bivariate_expectation(
            Bivariate {
                var_u: 0.0,
                var_v: 2.0,
                cov: 0.0,
            },
            &shape,
            |_, v| [v * v],
        );
        assert!((m - 2.0).abs() < 1e-12);
    }
}
