//! Link functions σ of the single-index model, with their Hermite coefficients.
//!
//! `a_k(σ) = E[σ(z) He_k(z)] / sqrt(k!)` (docs/theory.md, section 2). Coefficients come from quadrature: exact
//! Gauss–Hermite for polynomial links, kink-split Gauss–Legendre for relu, |z| and sign, and a 64-node
//! Gauss–Hermite rule for the smooth ones (tanh, erf, sigmoid). Derivatives are the a.e. derivatives
//! SGD uses (relu'(0) = 0, sign' = 0).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::quadrature::{normal_expectation, Shape};

/// A link function.
#[derive(Clone, Debug, PartialEq)]
pub enum Link {
    /// Probabilists' Hermite polynomial He_k, 1 ≤ k ≤ 6.
    Hermite(u32),
    Relu,
    Abs,
    Sign,
    Tanh,
    Erf,
    Sigmoid,
    /// z², i.e. He_2 + 1.
    Square,
    /// `Σ_k c_k He_k(z) / sqrt(k!)`: the link whose normalized Hermite coefficients are `c`.
    Coefficients(Vec<f64>),
}

/// How a link is written in a config file: a name, or a table `{ coefficients = [a0, a1, ...] }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LinkSpec {
    Name(String),
    Coefficients { coefficients: Vec<f64> },
}

/// The names accepted in configs, for error messages.
pub const LINK_NAMES: &str = "he1..he6, relu, abs, sign, tanh, erf, sigmoid, square (or z2), or { coefficients = [a0, a1, ...] }";

impl Link {
    /// Parse a config value; the error says what is accepted.
    pub fn from_spec(spec: &LinkSpec) -> Result<Self, String> {
        match spec {
            LinkSpec::Coefficients { coefficients } => {
                if coefficients.is_empty() {
                    return Err("coefficient list is empty".into());
                }
                if coefficients.len() > 21 {
                    return Err("at most 21 coefficients (degree 20) are supported".into());
                }
                if let Some(c) = coefficients.iter().find(|c| !c.is_finite()) {
                    return Err(format!("coefficient {c} is not finite"));
                }
                if coefficients.iter().skip(1).all(|&c| c == 0.0) {
                    return Err(format!(
                        "coefficients {coefficients:?} make a constant link (every a_k with k ≥ 1 \
                         is 0): labels carry no information about any direction and every risk is 0"
                    ));
                }
                Ok(Link::Coefficients(coefficients.clone()))
            }
            LinkSpec::Name(name) => {
                let lower = name.trim().to_ascii_lowercase();
                let link = match lower.as_str() {
                    "relu" => Link::Relu,
                    "abs" | "|z|" => Link::Abs,
                    "sign" => Link::Sign,
                    "tanh" => Link::Tanh,
                    "erf" => Link::Erf,
                    "sigmoid" => Link::Sigmoid,
                    "square" | "z2" | "z^2" | "z²" => Link::Square,
                    other => match other.strip_prefix("he").and_then(|k| k.parse::<u32>().ok()) {
                        Some(k) if (1..=6).contains(&k) => Link::Hermite(k),
                        _ => {
                            return Err(format!(
                                "unknown link `{name}`; expected one of {LINK_NAMES}"
                            ))
                        }
                    },
                };
                Ok(link)
            }
        }
    }

    /// σ(z).
    #[inline]
    pub fn eval(&self, z: f64) -> f64 {
        match self {
            Link::Hermite(k) => hermite(*k, z),
            Link::Relu => z.max(0.0),
            Link::Abs => z.abs(),
            Link::Sign => {
                if z > 0.0 {
                    1.0
                } else if z < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Link::Tanh => z.tanh(),
            Link::Erf => erf(z),
            Link::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Link::Square => z * z,
            Link::Coefficients(c) => coefficient_series(c, z).0,
        }
    }

    /// σ'(z) (almost everywhere).
    #[inline]
    pub fn deriv(&self, z: f64) -> f64 {
        match self {
            Link::Hermite(k) => *k as f64 * hermite(*k - 1, z),
            Link::Relu => f64::from(z > 0.0),
            Link::Abs => {
                if z > 0.0 {
                    1.0
                } else if z < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Link::Sign => 0.0,
            Link::Tanh => {
                let t = z.tanh();
                1.0 - t * t
            }
            Link::Erf => std::f64::consts::FRAC_2_SQRT_PI * (-z * z).exp(),
            Link::Sigmoid => {
                let s = 1.0 / (1.0 + (-z).exp());
                s * (1.0 - s)
            }
            Link::Square => 2.0 * z,
            Link::Coefficients(c) => coefficient_series(c, z).1,
        }
    }

    /// (σ(z), σ'(z)) at once: the SGD hot path needs both.
    #[inline]
    pub fn eval_and_deriv(&self, z: f64) -> (f64, f64) {
        match self {
            Link::Hermite(k) => hermite_and_deriv(*k, z),
            Link::Coefficients(c) => coefficient_series(c, z),
            _ => (self.eval(z), self.deriv(z)),
        }
    }

    /// How σ and σ' behave, for choosing a quadrature rule. Polynomial degree is that of σ.
    pub fn shape(&self) -> Shape {
        match self {
            Link::Hermite(k) => Shape::Polynomial(*k as usize),
            Link::Square => Shape::Polynomial(2),
            Link::Coefficients(c) => Shape::Polynomial(c.len() - 1),
            Link::Relu | Link::Abs | Link::Sign => Shape::Kinks(vec![0.0]),
            Link::Tanh | Link::Erf | Link::Sigmoid => Shape::Smooth,
        }
    }

    /// Shape of an integrand made of σ and σ' raised to total power at most `power`, times a
    /// polynomial of degree `extra` in the same variable.
    pub fn shape_of_power(&self, power: usize, extra: usize) -> Shape {
        match self.shape() {
            Shape::Polynomial(deg) => Shape::Polynomial(power * deg + extra),
            other => other,
        }
    }

    /// Normalized Hermite coefficients `a_0 ..= a_kmax`.
    pub fn hermite_coefficients(&self, kmax: usize) -> Vec<f64> {
        if let Link::Coefficients(c) = self {
            return (0..=kmax)
                .map(|k| c.get(k).copied().unwrap_or(0.0))
                .collect();
        }
        let shape = self.shape_of_power(1, kmax);
        let mut acc = vec![0.0; kmax + 1];
        let mut he = vec![0.0; kmax + 1];
        crate::quadrature::for_each_node(&shape, |z, w| {
            hermite_all(z, &mut he);
            let f = self.eval(z);
            for k in 0..=kmax {
                acc[k] += w * f * he[k];
            }
        });
        let mut factorial = 1.0;
        for (k, a) in acc.iter_mut().enumerate() {
            if k > 0 {
                factorial *= k as f64;
            }
            *a /= factorial.sqrt();
            if a.abs() < 1e-13 {
                *a = 0.0; // exact zeros of symmetric links, not quadrature noise
            }
        }
        acc
    }

    /// Information exponent: the smallest k ≥ 1 with a_k ≠ 0 (None if σ is constant up to degree 20).
    pub fn information_exponent(&self) -> Option<usize> {
        let a = self.hermite_coefficients(20);
        (1..a.len()).find(|&k| a[k].abs() > 1e-10)
    }

    /// `E[σ(z)²]`, exactly.
    pub fn second_moment(&self) -> f64 {
        normal_expectation(&self.shape_of_power(2, 0), |z| self.eval(z).powi(2))
    }

    /// Whether σ is odd (so the sign of w matters) — decided from its Hermite coefficients.
    pub fn is_even(&self) -> bool {
        self.hermite_coefficients(20)
            .iter()
            .skip(1)
            .step_by(2)
            .all(|a| *a == 0.0)
    }

    /// The spec that reads back as this link.
    pub fn to_spec(&self) -> LinkSpec {
        match self {
            Link::Coefficients(c) => LinkSpec::Coefficients {
                coefficients: c.clone(),
            },
            other => LinkSpec::Name(other.to_string()),
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Hermite(k) => write!(f, "he{k}"),
            Link::Relu => f.write_str("relu"),
            Link::Abs => f.write_str("abs"),
            Link::Sign => f.write_str("sign"),
            Link::Tanh => f.write_str("tanh"),
            Link::Erf => f.write_str("erf"),
            Link::Sigmoid => f.write_str("sigmoid"),
            Link::Square => f.write_str("square"),
            Link::Coefficients(c) => {
                let parts: Vec<String> = c.iter().map(|x| format!("{x}")).collect();
                write!(f, "coefficients[{}]", parts.join(" "))
            }
        }
    }
}

/// He_k(z) by the three-term recurrence.
#[inline]
pub fn hermite(k: u32, z: f64) -> f64 {
    match k {
        0 => 1.0,
        1 => z,
        2 => z * z - 1.0,
        3 => z * (z * z - 3.0),
        _ => {
            let (mut prev, mut cur) = (z * z - 1.0, z * (z * z - 3.0));
            for j in 3..k {
                let next = z * cur - j as f64 * prev;
                prev = cur;
                cur = next;
            }
            cur
        }
    }
}

#[inline]
fn hermite_and_deriv(k: u32, z: f64) -> (f64, f64) {
    (hermite(k, z), k as f64 * hermite(k - 1, z))
}

/// He_0(z) ..= He_{n-1}(z) into `out`.
pub fn hermite_all(z: f64, out: &mut [f64]) {
    if out.is_empty() {
        return;
    }
    out[0] = 1.0;
    if out.len() > 1 {
        out[1] = z;
    }
    for k in 2..out.len() {
        out[k] = z * out[k - 1] - (k - 1) as f64 * out[k - 2];
    }
}

/// (Σ c_k He_k(z)/sqrt(k!), its derivative), using He_k' = k He_{k−1}.
#[inline]
fn coefficient_series(c: &[f64], z: f64) -> (f64, f64) {
    let (mut value, mut deriv) = (0.0, 0.0);
    let (mut he_prev, mut he) = (0.0, 1.0); // He_{k-1}, He_k
    let mut inv_sqrt_fact = 1.0;
    for (k, &ck) in c.iter().enumerate() {
        if k > 0 {
            let next = z * he - (k - 1) as f64 * he_prev;
            he_prev = he;
            he = next;
            inv_sqrt_fact /= (k as f64).sqrt();
        }
        value += ck * inv_sqrt_fact * he;
        deriv += ck * inv_sqrt_fact * k as f64 * he_prev;
    }
    (value, deriv)
}

/// The error function, accurate to a few ulps: Taylor series near 0, continued fraction for erfc beyond.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 2.0 {
        // erf x = 2/sqrt(pi) Σ (-1)^n x^(2n+1) / (n! (2n+1)); terms alternate, fine for |x| < 2.
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        std::f64::consts::FRAC_2_SQRT_PI * sum
    } else if ax > 6.0 {
        x.signum()
    } else {
        x.signum() * (1.0 - erfc_continued_fraction(ax))
    }
}

/// erfc(x) for x ≥ 2 by Lentz's evaluation of the continued fraction.
fn erfc_continued_fraction(x: f64) -> f64 {
    // erfc x = exp(-x²)/sqrt(pi) · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..200 {
        let a = n as f64 * 0.5;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn link(name: &str) -> Link {
        Link::from_spec(&LinkSpec::Name(name.into())).unwrap()
    }

    #[test]
    fn hermite_links_have_a_single_coefficient() {
        // He_k = sqrt(k!) · (normalized basis element k): a_k = sqrt(k!), all others zero.
        for k in 1..=6u32 {
            let a = link(&format!("he{k}")).hermite_coefficients(10);
            let fact: f64 = (1..=k).map(f64::from).product();
            for (j, &aj) in a.iter().enumerate() {
                let want = if j == k as usize { fact.sqrt() } else { 0.0 };
                assert!(
                    (aj - want).abs() < 1e-12,
                    "he{k}: a_{j} = {aj}, want {want}"
                );
            }
        }
    }

    #[test]
    fn closed_form_coefficients() {
        let s2pi = (2.0 * PI).sqrt();
        let tol = 1e-10;
        // relu: a0 = 1/sqrt(2pi), a1 = 1/2, a2 = 1/(2 sqrt(pi)) · ... = φ(0)/sqrt(2), odd k ≥ 3 vanish.
        let relu = link("relu").hermite_coefficients(6);
        assert!((relu[0] - 1.0 / s2pi).abs() < tol);
        assert!((relu[1] - 0.5).abs() < tol);
        assert!((relu[2] - 1.0 / (s2pi * 2f64.sqrt())).abs() < tol);
        assert!(relu[3].abs() < tol && relu[5].abs() < tol);
        // |z|: a0 = sqrt(2/pi), a2 = sqrt(2/pi)/sqrt(2) = 1/sqrt(pi), a4 = -sqrt(2/pi)/sqrt(24).
        let abs = link("abs").hermite_coefficients(6);
        assert!((abs[0] - (2.0 / PI).sqrt()).abs() < tol);
        assert!((abs[2] - 1.0 / PI.sqrt()).abs() < tol);
        assert!((abs[4] + (2.0 / PI).sqrt() / 24f64.sqrt()).abs() < tol);
        // sign: a1 = sqrt(2/pi), a3 = -sqrt(2/pi)/sqrt(6).
        let sign = link("sign").hermite_coefficients(6);
        assert!((sign[1] - (2.0 / PI).sqrt()).abs() < tol);
        assert!((sign[3] + (2.0 / PI).sqrt() / 6f64.sqrt()).abs() < tol);
        // erf(z): a1 = 2/sqrt(3 pi) (E[z erf z] = 2/(pi sqrt 3) · pi/... ), a3 = -2/(3 sqrt(3 pi)) · sqrt(6)/... :
        // E[erf(z) z] = 2/sqrt(pi) · 1/sqrt(3); E[erf(z) He3] = -(2/sqrt(pi)) · 2/(3 sqrt 3).
        let erf_a = link("erf").hermite_coefficients(5);
        assert!((erf_a[1] - 2.0 / (3.0 * PI).sqrt()).abs() < tol);
        assert!((erf_a[3] + 4.0 / (3.0 * (3.0 * PI).sqrt()) / 6f64.sqrt()).abs() < tol);
        // z²: a0 = 1, a2 = sqrt 2.
        let sq = link("square").hermite_coefficients(4);
        assert!(
            (sq[0] - 1.0).abs() < tol && (sq[2] - 2f64.sqrt()).abs() < tol && sq[4].abs() < tol
        );
        // Reference values of docs/theory.md (4 decimals).
        let tanh = link("tanh").hermite_coefficients(3);
        assert!((tanh[1] - 0.6057).abs() < 5e-5 && (tanh[3] + 0.1484).abs() < 5e-5);
        // sigmoid(z) = 1/2 + tanh(z/2)/2: a0 = 1/2 and even coefficients vanish.
        let sig = link("sigmoid").hermite_coefficients(4);
        assert!((sig[0] - 0.5).abs() < tol && sig[2].abs() < tol && sig[4].abs() < tol);
    }

    #[test]
    fn parseval_holds() {
        // Σ a_k² = E[σ²]. tanh's coefficients decay like exp(-c sqrt k): the tail past k = 40 is ~1e-8.
        for name in ["tanh", "erf", "sigmoid", "he4"] {
            let l = link(name);
            let a = l.hermite_coefficients(40);
            let sum: f64 = a.iter().map(|x| x * x).sum();
            assert!(
                (sum - l.second_moment()).abs() < 1e-7,
                "{name}: {sum} vs {}",
                l.second_moment()
            );
        }
    }

    #[test]
    fn coefficient_links_round_trip() {
        let l = Link::from_spec(&LinkSpec::Coefficients {
            coefficients: vec![0.1, 0.0, 0.5, 1.0],
        })
        .unwrap();
        let a = l.hermite_coefficients(5);
        assert_eq!(a, vec![0.1, 0.0, 0.5, 1.0, 0.0, 0.0]);
        // σ(z) = 0.1 + 0.5 He2/sqrt2 + He3/sqrt6; check value and derivative by finite differences.
        let z = 0.83;
        let want = 0.1 + 0.5 * (z * z - 1.0) / 2f64.sqrt() + (z * z * z - 3.0 * z) / 6f64.sqrt();
        assert!((l.eval(z) - want).abs() < 1e-14);
        let h = 1e-6;
        let fd = (l.eval(z + h) - l.eval(z - h)) / (2.0 * h);
        assert!((l.deriv(z) - fd).abs() < 1e-8);
        // and the quadrature path agrees with the stored coefficients for a polynomial written by hand
        let he = Link::Hermite(3).hermite_coefficients(4);
        assert!((he[3] - 6f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for name in [
            "he1", "he2", "he3", "he4", "he5", "he6", "tanh", "erf", "sigmoid", "square", "relu",
            "abs",
        ] {
            let l = link(name);
            for &z in &[-2.3, -0.7, 0.4, 1.9] {
                let h = 1e-6;
                let fd = (l.eval(z + h) - l.eval(z - h)) / (2.0 * h);
                assert!(
                    (l.deriv(z) - fd).abs() < 1e-6 * fd.abs().max(1.0),
                    "{name} at {z}"
                );
                let (v, d) = l.eval_and_deriv(z);
                assert_eq!((v, d), (l.eval(z), l.deriv(z)));
            }
        }
    }

    #[test]
    fn erf_is_accurate() {
        // Reference values (Abramowitz & Stegun, 15 digits).
        for (x, want) in [
            (0.5, 0.520499877813047),
            (1.0, 0.842700792949715),
            (2.5, 0.999593047982555),
            (3.0, 0.999977909503001),
        ] {
            assert!((erf(x) - want).abs() < 2e-15, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 2e-15);
        }
    }

    #[test]
    fn information_exponents() {
        assert_eq!(link("he3").information_exponent(), Some(3));
        assert_eq!(link("relu").information_exponent(), Some(1));
        assert_eq!(link("abs").information_exponent(), Some(2));
        assert_eq!(link("square").information_exponent(), Some(2));
        assert!(link("abs").is_even() && !link("tanh").is_even());
    }

    #[test]
    fn unknown_link_names_the_choices() {
        let err = Link::from_spec(&LinkSpec::Name("he9".into())).unwrap_err();
        assert!(err.contains("he9") && err.contains("relu"), "{err}");
    }
}
