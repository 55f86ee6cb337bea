//! Each fused op against its composite version in [`super::composite`], forward and backward.

use candle_core::{DType, Device, Tensor, Var};

use super::*;

/// A standard-normal f32 tensor, the same for the same seed.
pub(crate) fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = w2sg_data::SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// max |a − b| / max(max |b|, 1e-6): relative to the scale of the reference.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let m = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(a.dims(), b.dims());
    m(&(a - b).unwrap()) / m(b).max(1e-6)
}

/// Runs `f` on fresh variables built from `inputs`, backpropagates `Σ out · probe` and returns the
/// output and the gradient of every input.
fn fwd_bwd(
    inputs: &[Tensor],
    probe: Option<&Tensor>,
    f: impl Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts);
    let obj = match probe {
        Some(p) => (&out * p).unwrap().sum_all().unwrap(),
        None => out.sum_all().unwrap(),
    };
    let grads = obj.backward().unwrap();
    let gs = ts
        .iter()
        .map(|t| grads.get(t).expect("every input gets a gradient").clone())
        .collect();
    (out, gs)
}

/// Compares the fused and composite versions of an op, forward and backward, at relative `tol`.
fn check(
    inputs: &[Tensor],
    probe: Option<&Tensor>,
    tol: f32,
    fused: impl Fn(&[Tensor]) -> Tensor,
    oracle: impl Fn(&[Tensor]) -> Tensor,
) {
    let (y1, g1) = fwd_bwd(inputs, probe, &fused);
    let (y2, g2) = fwd_bwd(inputs, probe, &oracle);
    let d = rel_diff(&y1, &y2);
    assert!(d < tol, "forward differs by {d}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let d = rel_diff(a, b);
        assert!(d < tol, "gradient of input {i} differs by {d}");
    }
    // Without variables the op runs forward only and gives the same values.
    let plain = fused(inputs);
    assert_eq!(
        rel_diff(&plain, &y1),
        0.0,
        "untracked forward differs from tracked"
    );
}

#[test]
fn linear_matches_composite_with_every_activation() {
    let x = randn(&[2, 9, 12], 16).affine(1.5, 0.0).unwrap();
    let w = randn(&[7, 12], 17);
    let b = randn(&[7], 18);
    let probe = randn(&[2, 9, 7], 19);
    for act in [
        None,
        Some(Activation::GeluErf),
        Some(Activation::GeluTanh),
        Some(Activation::Relu),
        Some(Activation::Silu),
    ] {
        check(
            &[x.clone(), w.clone(), b.clone()],
            Some(&probe),
            2e-5,
            |t| linear(&t[0], &t[1], Some(&t[2]), act).unwrap(),
            |t| composite::linear(&t[0], &t[1], Some(&t[2]), act).unwrap(),
        );
    }
    check(
        &[x, w],
        Some(&probe),
        2e-5,
        |t| linear(&t[0], &t[1], None, None).unwrap(),
        |t| composite::linear(&t[0], &t[1], None, None).unwrap(),
    );
}

/// A layer wide enough (300 outputs) that the GEMMs reading W transposed run as column blocks of
/// [`COLS_PER_TASK`] (the last one partial), against the composite, forward and backward.
#[test]
fn wide_linear_in_column_blocks_matches_composite() {
    assert!(300 >= 2 * COLS_PER_TASK && 300 % COLS_PER_TASK != 0);
    assert!(300 * 900 >= SPLIT_MIN_ELEMENTS);
    let x = randn(&[3, 11, 900], 90);
    let w = randn(&[300, 900], 91);
    let b = randn(&[300], 92);
    let probe = randn(&[3, 11, 300], 93);
    check(
        &[x.clone(), w.clone(), b.clone()],
        Some(&probe),
        2e-5,
        |t| linear(&t[0], &t[1], Some(&t[2]), Some(Activation::GeluErf)).unwrap(),
        |t| composite::linear(&t[0], &t[1], Some(&t[2]), Some(Activation::GeluErf)).unwrap(),
    );
    let (a, bm) = (randn(&[4, 900], 94), randn(&[300, 4], 95));
    check(
        &[x, a, bm],
        Some(&probe),
        2e-5,
        |t| lora_linear(&t[0], &w, Some(&b), &t[1], &t[2], 1.5, None).unwrap(),
        |t| composite::lora_linear(&t[0], &w, Some(&b), &t[1], &t[2], 1.5, None).unwrap(),
    );
}

/// The fused LoRA layer against peft's composite `x Wᵀ + b + s·(x Aᵀ) Bᵀ`, W and b frozen: the
/// output and the gradients of x, A and B, with and without bias and activation.
#[test]
fn lora_linear_matches_composite() {
    let x = randn(&[2, 9, 12], 80).affine(1.5, 0.0).unwrap();
    let w = randn(&[7, 12], 81);
    let b = randn(&[7], 82);
    let a = randn(&[3, 12], 83).affine(0.3, 0.0).unwrap();
    let bm = randn(&[7, 3], 84);
    let probe = randn(&[2, 9, 7], 85);
    for (bias, act) in [
        (Some(&b), None),
        (Some(&b), Some(Activation::GeluErf)),
        (None, Some(Activation::Silu)),
        (None, None),
    ] {
        check(
            &[x.clone(), a.clone(), bm.clone()],
            Some(&probe),
            2e-5,
            |t| lora_linear(&t[0], &w, bias, &t[1], &t[2], 2.5, act).unwrap(),
            |t| composite::lora_linear(&t[0], &w, bias, &t[1], &t[2], 2.5, act).unwrap(),
        );
    }
    // An untracked input (the first block under LoRA) still gives the adapters their gradients.
    let (av, bv) = (
        Var::from_tensor(&a).unwrap(),
        Var::from_tensor(&bm).unwrap(),
    );
    let y = lora_linear(&x, &w, Some(&b), &av, &bv, 2.5, None).unwrap();
    let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let y2 = composite::lora_linear(&x, &w, Some(&b), &av, &bv, 2.5, None).unwrap();
    let g2 = (y2 * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [&av, &bv] {
        let d = rel_diff(g.get(v).unwrap(), g2.get(v).unwrap());
        assert!(d < 2e-5, "adapter gradient differs by {d}");
    }
    assert!(g.get(&x).is_none(), "an untracked input got a gradient");
}

#[test]
fn activation_matches_composite() {
    let x = randn(&[5, 33], 12).affine(2.0, 0.0).unwrap();
    let probe = randn(&[5, 33], 13);
    for act in [
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::Relu,
        Activation::Silu,
    ] {
        check(
            &[x.clone()],
            Some(&probe),
            2e-5,
            |t| activation(&t[0], act).unwrap(),
            |t| act.apply(&t[0]).unwrap(),
        );
    }
}

#[test]
fn add3_is_exact() {
    let (a, b, c) = (randn(&[4, 5], 20), randn(&[4, 5], 21), randn(&[4, 5], 22));
    let probe = randn(&[4, 5], 23);
    check(
        &[a, b, c],
        Some(&probe),
        1e-12,
        |t| add3(&t[0], &t[1], &t[2]).unwrap(),
        |t| ((&t[0] + &t[1]).unwrap() + &t[2]).unwrap(),
    );
}

#[test]
fn norms_match_composite() {
    let x = randn(&[3, 5, 32], 1).affine(3.0, 0.5).unwrap();
    let w = randn(&[32], 2).affine(0.5, 1.0).unwrap();
    let b = randn(&[32], 3);
    let probe = randn(&[3, 5, 32], 4);
    check(
        &[x.clone(), w.clone(), b],
        Some(&probe),
        1e-5,
        |t| layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
        |t| composite::layer_norm(&t[0], &t[1], &t[2], 1e-5).unwrap(),
    );
    check(
        &[x, w],
        Some(&probe),
        1e-5,
        |t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
        |t| composite::rms_norm(&t[0], &t[1], 1e-6).unwrap(),
    );
}

#[test]
fn layer_norm_reads_bf16() {
    let x = randn(&[4, 16], 5);
    let w = randn(&[16], 6);
    let b = randn(&[16], 7);
    let y = layer_norm(&x.to_dtype(DType::BF16).unwrap(), &w, &b, 1e-5).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let r = composite::layer_norm(&x, &w, &b, 1e-5).unwrap();
    assert!(rel_diff(&y.to_dtype(DType::F32).unwrap(), &r) < 2e-2);
}

#[test]
fn swiglu_matches_composite() {
    let x = randn(&[3, 4, 20], 8).affine(2.0, 0.0).unwrap();
    let probe = randn(&[3, 4, 10], 9);
    check(
        &[x],
        Some(&probe),
        1e-5,
        |t| swiglu(&t[0]).unwrap(),
        |t| composite::swiglu(&t[0]).unwrap(),
    );
}

#[test]
fn head_cross_entropy_matches_composite() {
    let (n, h, v) = (11, 8, 30);
    let x = randn(&[n, h], 28);
    let w = randn(&[v, h], 29);
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 13 + 5) % v as u32).collect();
    let targets = Tensor::from_vec(targets, n, &Device::Cpu).unwrap();
    check(
        &[x, w],
        None,
        1e-5,
        |t| (head_cross_entropy(&t[0], &t[1], &targets).unwrap() * 2.5).unwrap(),
        |t| (composite::head_cross_entropy(&t[0], &t[1], &targets).unwrap() * 2.5).unwrap(),
    );
}

/// Attention in both layouts, full and partial rotary, grouped queries, several query blocks.
#[test]
fn attention_matches_composite() {
    let cases = [
        // (b, t, heads, kv_heads, head_dim, rotary dims, layout)
        (2, 7, 4, 4, 8, 2, QkvLayout::PerHead),
        (1, 70, 2, 2, 16, 16, QkvLayout::PerHead),
        (2, 40, 4, 2, 8, 8, QkvLayout::Blocks),
        (1, 33, 6, 1, 4, 4, QkvLayout::Blocks),
    ];
    for (i, &(b, t, nh, nkv, hd, rd, layout)) in cases.iter().enumerate() {
        let spec = AttentionSpec {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            layout,
        };
        let rot = RotaryTables::new(rd, 10000.0, 128).unwrap();
        let qkv = randn(&[b, t, spec.qkv_width()], 40 + i as u64);
        let probe = randn(&[b, t, nh * hd], 50 + i as u64);
        check(
            &[qkv],
            Some(&probe),
            2e-5,
            |x| attention(&x[0], &spec, &rot).unwrap(),
            |x| composite::attention(&x[0], &spec, &rot).unwrap(),
        );
    }
}

#[test]
fn qkv_attention_matches_linear_then_attention() {
    let (b, t, h, nh) = (2, 37, 16, 4);
    let spec = AttentionSpec {
        heads: nh,
        kv_heads: nh,
        head_dim: h / nh,
        layout: QkvLayout::PerHead,
    };
    let rot = RotaryTables::new(2, 10000.0, 64).unwrap();
    let x = randn(&[b * t, h], 60);
    let w = randn(&[3 * h, h], 61).affine(0.3, 0.0).unwrap();
    let bias = randn(&[3 * h], 62);
    let probe = randn(&[b * t, h], 63);
    check(
        &[x, w, bias],
        Some(&probe),
        2e-5,
        |v| qkv_attention(&v[0], &v[1], Some(&v[2]), t, &spec, &rot).unwrap(),
        |v| {
            let qkv = composite::linear(&v[0], &v[1], Some(&v[2]), None)
                .unwrap()
                .reshape((b, t, 3 * h))
                .unwrap();
            composite::attention(&qkv, &spec, &rot)
                .unwrap()
                .reshape((b * t, h))
                .unwrap()
        },
    );
}

/// The same inputs give the same bits with 1 and 3 threads (every reduction has a fixed order).
#[test]
fn ops_are_deterministic_across_thread_counts() {
    let spec = AttentionSpec {
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        layout: QkvLayout::Blocks,
    };
    let rot = RotaryTables::new(8, 10000.0, 128).unwrap();
    let qkv = randn(&[3, 65, spec.qkv_width()], 70);
    let x = randn(&[200, 32], 71);
    let w = randn(&[32], 72);
    let (lx, lw, lbias) = (
        randn(&[300, 1000], 73),
        // 270 × 1000: the GEMMs reading W transposed run as column blocks ([`gemm`]).
        randn(&[270, 1000], 74),
        randn(&[270], 75),
    );
    let (la, lb) = (randn(&[8, 1000], 76), randn(&[270, 8], 77));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (y, g) = fwd_bwd(&[qkv.clone()], None, |v| {
                attention(&v[0], &spec, &rot).unwrap()
            });
            let (z, gz) = fwd_bwd(&[x.clone(), w.clone()], None, |v| {
                rms_norm(&v[0], &v[1], 1e-6).unwrap().sqr().unwrap()
            });
            let (l, gl) = fwd_bwd(&[lx.clone(), la.clone(), lb.clone()], None, |v| {
                lora_linear(
                    &v[0],
                    &lw,
                    Some(&lbias),
                    &v[1],
                    &v[2],
                    2.0,
                    Some(Activation::GeluErf),
                )
                .unwrap()
            });
            [y, g[0].clone(), z, gz[0].clone(), gz[1].clone(), l]
                .into_iter()
                .chain(gl)
                .collect::<Vec<_>>()
                .iter()
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(run(1), run(3));
}
