//! Rotary inverse frequencies: HF's default, and the scaled variants that published Llama families
//! use (`linear`, `llama3`), computed once here for every model file.
//!
//! Each follows `transformers`' `modeling_rope_utils` in f32, operation by operation (torch computes
//! `scalar / tensor` as `reciprocal(tensor) · scalar`, so this does too): the tables then agree with
//! HF's to the last bit or two, well inside the fixtures' tolerance, and the llama3 band edges
//! (`wavelen` against the low- and high-frequency wavelengths) fall on the same side.

/// How the default frequencies are rescaled (`rope_type` and its parameters).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    /// `default`: inv_freq = 1 / θ^(2i/rd).
    #[default]
    None,
    /// `linear` (position interpolation): every frequency divided by `factor`.
    Linear { factor: f64 },
    /// `llama3`: low frequencies (wavelength above `original / low_freq_factor`) divided by
    /// `factor`, high frequencies (below `original / high_freq_factor`) kept, and a smooth blend
    /// between the two bands.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Inverse frequencies of `rd` rotated channels (rd / 2 values) with base `theta`.
pub fn inv_freq(rd: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..rd / 2)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / rd as f32))
        .collect();
    match scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = (old / low_freq_factor) as f32;
            let high_wavelen = (old / high_freq_factor) as f32;
            let factor32 = factor as f32;
            base.iter()
                .map(|&f| {
                    let wavelen = (1.0 / f) * (2.0 * std::f64::consts::PI) as f32;
                    let scaled = if wavelen > low_wavelen {
                        f / factor32
                    } else {
                        f
                    };
                    if wavelen < high_wavelen || wavelen > low_wavelen {
                        return scaled;
                    }
                    let smooth = ((1.0 / wavelen) * old as f32 - low_freq_factor as f32)
                        / (high_freq_factor - low_freq_factor) as f32;
                    (1.0 - smooth) * scaled / factor32 + smooth * scaled
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3.1's published setting (θ 500000, factor 8, bands 1 and 4, original 8192) on a
    /// head of 128: the three bands follow their definitions, computed here in f64.
    #[test]
    fn llama3_bands_follow_the_definition() {
        let (theta, rd) = (500_000.0, 128);
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let got = inv_freq(rd, theta, s);
        let (mut low, mut mid, mut high) = (0, 0, 0);
        for (i, &g) in got.iter().enumerate() {
            let f = 1.0 / theta.powf(2.0 * i as f64 / rd as f64);
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let want = if wavelen < 8192.0 / 4.0 {
                high += 1;
                f
            } else if wavelen > 8192.0 {
                low += 1;
                f / 8.0
            } else {
                mid += 1;
                let smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
                (1.0 - smooth) * f / 8.0 + smooth * f
            };
            assert!(
                ((g as f64 - want) / want).abs() < 1e-5,
                "channel {i}: {g} vs {want}"
            );
        }
        assert!(low > 0 && mid > 0 && high > 0, "{low} {mid} {high}");
    }

    #[test]
    fn linear_divides_every_frequency() {
        let plain = inv_freq(16, 10_000.0, RopeScaling::None);
        let lin = inv_freq(16, 10_000.0, RopeScaling::Linear { factor: 4.0 });
        for (p, l) in plain.iter().zip(&lin) {
            assert_eq!(*l, p / 4.0);
        }
        assert_eq!(plain[0], 1.0);
    }
}
