//! Per-evaluation metrics of a binary classifier given P(y = 1) on a test set: accuracy with its
//! binomial standard error, AUROC with ties handled, expected calibration error, and agreement between
//! two classifiers.
//!
//! Conventions (stated because they change numbers):
//! - A prediction is class 1 when p > 1/2; p = 1/2 is class 0, as an argmax over [class 0, class 1]
//!   breaks the tie (the reference's evaluation).
//! - The standard error of an accuracy a on n examples is √(a(1 − a)/n).
//! - AUROC is the Mann–Whitney statistic with mid-ranks: a tied (positive, negative) pair counts 1/2.
//!   `None` when the test set has a single class (the statistic is undefined).
//! - ECE is the top-label calibration error of Guo et al. (2017): confidence max(p, 1 − p), `bins` equal
//!   bins (lo, hi] of [0, 1] (confidence 0 goes to the first), Σ_b (n_b/n)|accuracy_b − confidence_b|.
//!   For a binary classifier the confidence is ≥ 1/2, so bins below 1/2 stay empty.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn check_probs(what: &'static str, p: &[f64]) -> Result<()> {
    if p.is_empty() {
        return Err(Error::input(what, "no examples"));
    }
    if let Some((i, v)) = p
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(Error::input(
            what,
            format!("probability {v} of example {i} is not in [0, 1]"),
        ));
    }
    Ok(())
}

fn check_len(what: &'static str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::input(
            what,
            format!("{a} predictions for {b} labels"),
        ));
    }
    Ok(())
}

/// Per-example correctness of p > 1/2 against the labels.
pub fn correct(probs: &[f64], labels: &[bool]) -> Result<Vec<bool>> {
    check_len("metrics", probs.len(), labels.len())?;
    check_probs("metrics", probs)?;
    Ok(probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p > 0.5) == y)
        .collect())
}

/// Fraction of correct predictions.
pub fn accuracy(probs: &[f64], labels: &[bool]) -> Result<f64> {
    let c = correct(probs, labels)?;
    Ok(c.iter().filter(|&&b| b).count() as f64 / c.len() as f64)
}

/// √(a(1 − a)/n); 0 for n = 0.
pub fn binomial_se(acc: f64, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    (acc * (1.0 - acc) / n as f64).max(0.0).sqrt()
}

/// Standard error of the difference of two accuracies on the same examples (paired): the population
/// standard deviation of d_i = 1[a_i correct] − 1[b_i correct] over √n.
pub fn paired_diff_se(a: &[bool], b: &[bool]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x as i32 as f64 - y as i32 as f64)
        .collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    (var / n as f64).sqrt()
}

/// Area under the ROC curve of `scores` (any monotone score: probabilities or logits) with mid-ranks
/// for ties; `None` when all labels are equal.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>> {
    check_len("auroc", scores.len(), labels.len())?;
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::input(
            "auroc",
            format!("score of example {i} is not finite"),
        ));
    }
    let n = scores.len();
    let n_pos = labels.iter().filter(|&&y| y).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the mid-ranks (1-based) of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        for &e in &idx[i..=j] {
            if labels[e] {
                rank_sum += mid_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Ok(Some(u / (n_pos as f64 * n_neg as f64)))
}

/// Top-label expected calibration error with `bins` equal-width bins.
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> Result<f64> {
    if bins == 0 {
        return Err(Error::config("metrics.ece_bins", "must be at least 1"));
    }
    check_len("ece", probs.len(), labels.len())?;
    check_probs("ece", probs)?;
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0.0f64; bins];
    let mut correct_sum = vec![0.0f64; bins];
    for (&p, &y) in probs.iter().zip(labels) {
        let pred = p > 0.5;
        let conf = if pred { p } else { 1.0 - p };
        let b = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        count[b] += 1;
        conf_sum[b] += conf;
        correct_sum[b] += (pred == y) as i32 as f64;
    }
    let n = probs.len() as f64;
    Ok((0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (correct_sum[b] - conf_sum[b]).abs() / n)
        .sum())
}

/// Fraction of examples on which two classifiers predict the same class.
pub fn agreement(a: &[f64], b: &[f64]) -> Result<f64> {
    check_len("agreement", a.len(), b.len())?;
    check_probs("agreement", a)?;
    check_probs("agreement", b)?;
    let same = a
        .iter()
        .zip(b)
        .filter(|(&x, &y)| (x > 0.5) == (y > 0.5))
        .count();
    Ok(same as f64 / a.len() as f64)
}

/// The metrics of one classifier on one test set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Test-set size.
    pub n: usize,
    pub accuracy: f64,
    /// Binomial standard error of `accuracy`.
    pub accuracy_se: f64,
    /// `None` for a single-class test set.
    pub auroc: Option<f64>,
    pub ece: f64,
}

impl EvalMetrics {
    /// All metrics of `probs` against `labels`.
    pub fn compute(probs: &[f64], labels: &[bool], ece_bins: usize) -> Result<Self> {
        let acc = accuracy(probs, labels)?;
        Ok(EvalMetrics {
            n: probs.len(),
            accuracy: acc,
            accuracy_se: binomial_se(acc, probs.len()),
            auroc: auroc(probs, labels)?,
            ece: ece(probs, labels, ece_bins)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_se_by_hand() {
        let p = [0.9, 0.2, 0.5, 0.7, 0.4];
        let y = [true, false, true, false, false];
        // Predictions 1, 0, 0 (tie → 0), 1, 0: correct, correct, wrong, wrong, correct → 3/5.
        assert_eq!(accuracy(&p, &y).unwrap(), 0.6);
        assert!((binomial_se(0.6, 5) - (0.24f64 / 5.0).sqrt()).abs() < 1e-15);
        assert!(accuracy(&[0.5], &[true, false]).is_err());
        assert!(accuracy(&[1.5], &[true]).is_err());
        assert!(accuracy(&[], &[]).is_err());
    }

    #[test]
    fn paired_se_by_hand() {
        // d = [1, 0, −1, 1]: mean 1/4, population variance (9/16 + 1/16 + 25/16 + 9/16)/4 = 11/16,
        // SE = √(11/16 / 4).
        let a = [true, true, false, true];
        let b = [false, true, true, false];
        assert!((paired_diff_se(&a, &b) - (11.0f64 / 64.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn auroc_by_hand_with_ties() {
        // Positives scores {0.8, 0.4}, negatives {0.4, 0.1}: pairs (0.8>0.4)=1, (0.8>0.1)=1,
        // (0.4=0.4)=1/2, (0.4>0.1)=1 → 3.5/4.
        let s = [0.8, 0.4, 0.4, 0.1];
        let y = [true, true, false, false];
        assert_eq!(auroc(&s, &y).unwrap(), Some(0.875));
        // All tied → 1/2; perfectly reversed → 0; single class → None.
        assert_eq!(auroc(&[0.3; 4], &y).unwrap(), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &y).unwrap(), Some(0.0));
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]).unwrap(), None);
    }

    #[test]
    fn ece_by_hand() {
        // 5 bins. p = 0.95 (y=1, conf .95 bin (0.8,1], correct), 0.85 (y=0, conf .85, wrong),
        // 0.3 (y=0, conf .7 bin (0.6,0.8], correct), 0.65 (y=1, conf .65, correct).
        // Bin (0.8,1]: acc 1/2, conf 0.9 → |0.5 − 0.9|·2/4 = 0.2.
        // Bin (0.6,0.8]: acc 1, conf 0.675 → 0.325·2/4 = 0.1625. ECE = 0.3625.
        let p = [0.95, 0.85, 0.3, 0.65];
        let y = [true, false, false, true];
        assert!((ece(&p, &y, 5).unwrap() - 0.3625).abs() < 1e-12);
        // One bin: accuracy 3/4, mean confidence (0.95 + 0.85 + 0.7 + 0.65)/4 = 0.7875.
        assert!((ece(&p, &y, 1).unwrap() - 0.0375).abs() < 1e-12);
        assert!(ece(&p, &y, 0).is_err());
    }

    #[test]
    fn agreement_and_bundle() {
        assert_eq!(
            agreement(&[0.9, 0.1, 0.6, 0.5], &[0.7, 0.4, 0.4, 0.2]).unwrap(),
            0.75
        );
        let m =
            EvalMetrics::compute(&[0.95, 0.85, 0.3, 0.65], &[true, false, false, true], 5).unwrap();
        assert_eq!(m.n, 4);
        assert_eq!(m.accuracy, 0.75);
        assert_eq!(m.auroc, Some(0.75)); // pos {0.95, 0.65} vs neg {0.85, 0.3}: (1 + 1 + 0 + 1)/4
    }
}
