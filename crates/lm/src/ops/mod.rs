//! The fused CPU ops that every model file uses, for inference and training alike.
//!
//! Each op exists once, under one unique candle op name, with a backward pass where training needs
//! it. Inference calls the same op: candle records the backward graph only when an input is a
//! variable (or depends on one), so a frozen checkpoint pays nothing for it, and the ops that would
//! keep large state for the backward pass (attention probabilities, GELU′) keep it only when an input
//! is tracked ([`Tensor::track_op`]), and give it up in their backward pass, so that it is freed as
//! the backward pass goes down the graph rather than when the graph is dropped (a second backward
//! pass over one graph is therefore an error, not a silent recomputation).
//!
//! | op name | function | backward |
//! |---|---|---|
//! | `w2sg-linear`, `w2sg-linear-no-bias` | [`linear`]: `act(x Wᵀ + b)`, one GEMM onto the bias | yes |
//! | `w2sg-lora-linear` | [`lora_linear`]: `act(x Wᵀ + b + s·(x Aᵀ) Bᵀ)`, W and b frozen; [`lora_linear_for_gradient`]: the same node, its output not computed | A, B, x |
//! | `w2sg-activation` | [`activation`]: an activation alone (LoRA and side-by-side layers) | yes |
//! | `w2sg-add3` | [`add3`]: `(a + b) + c`, GPT-NeoX's parallel residual | yes |
//! | `w2sg-layer-norm` | [`layer_norm`]: two-pass, f32 statistics (f32/bf16/f16 in) | f32 |
//! | `w2sg-rms-norm` | [`rms_norm`]: `w · x / rms(x)` in f32 | f32 |
//! | `w2sg-swiglu` | [`swiglu`]: `silu(gate) · up` from `[up | gate]` | yes |
//! | `w2sg-causal-attention` | [`attention`]: packed QKV → rotary → causal softmax → values | yes |
//! | `w2sg-qkv-causal-attention` | [`qkv_attention`]: the QKV projection inside the same op | yes |
//! | `w2sg-gradient-seed` | [`gradient_seed`]: a scalar whose backward pass puts a given gradient at a tensor | yes |
//! | `w2sg-head-cross-entropy` | [`head_cross_entropy`]: output head fused with the mean cross-entropy | yes |
//!
//! The AdamW step is [`crate::optim`]'s, a pass over the variables' storage rather than a graph op.
//!
//! Every op is CPU f32 (LayerNorm also reads bf16/f16); on other devices and dtypes each public
//! function falls back to its composite version in [`composite`], built from candle ops that all have
//! backward passes. The composite versions are also the test oracles of the fused ones.
//!
//! Determinism: GEMMs split the output, never the inner dimension; every reduction over rows (bias
//! and norm gradients, losses) is summed in a fixed order of fixed blocks. Results are bit-identical
//! for every thread count.

mod attention;
pub mod composite;
mod linear;
mod lora;
mod loss;
mod math;
mod norm;
mod rope;
mod seed;
mod swiglu;

pub use attention::{attention, qkv_attention, AttentionSpec, QkvLayout, RotaryTables};
pub use linear::{activation, add3, linear, Activation};
pub use lora::{lora_linear, lora_linear_for_gradient};
pub use loss::head_cross_entropy;
pub use norm::{layer_norm, rms_norm};
pub use rope::{inv_freq, RopeScaling};
pub use seed::gradient_seed;
pub use swiglu::swiglu;

use candle_core::{CpuStorage, Layout, Tensor};

/// Rows handled per rayon task (keeps task overhead small against short rows).
const ROWS_PER_TASK: usize = 64;

/// Elements per parallel task of elementwise passes.
const CHUNK: usize = 1 << 14;

/// Whether the fused op can run on `x` (a CPU f32 tensor).
pub(crate) fn fused_ok(xs: &[&Tensor]) -> bool {
    !composite_forced()
        && xs
            .iter()
            .all(|x| x.device().is_cpu() && x.dtype() == candle_core::DType::F32)
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: f32 input expected"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: contiguous input expected"),
    }
}

/// The f32 data of a contiguous CPU tensor, borrowed from behind its storage read guard (no copy).
fn cpu_f32<'a>(
    s: &'a candle_core::Storage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match s {
        candle_core::Storage::Cpu(c) => f32_slice(c, l, what),
        _ => candle_core::bail!("{what}: CPU tensor expected"),
    }
}

thread_local! {
    static COMPOSITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every op on its composite path (the path of other devices) on this thread: how
/// the tests check a whole model's fused path against the path a GPU build takes.
pub fn with_composite_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            COMPOSITE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(COMPOSITE.with(|c| c.replace(true)));
    f()
}

fn composite_forced() -> bool {
    COMPOSITE.with(|c| c.get())
}

/// Whether the CPU has AVX2 and FMA (checked once per call site by the standard library's cache).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn $name` whose body is compiled twice, for AVX2 + FMA and for the baseline, and picks
/// the first when the CPU has them. No FMA is written in the bodies, so both give the same bits.
macro_rules! dispatch_avx2 {
    ($(#[$m:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::ops::has_avx2() {
                // SAFETY: the CPU supports AVX2 and FMA (checked).
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use dispatch_avx2;

/// How a GEMM may use threads.
#[derive(Debug, Clone, Copy)]
enum Threads {
    /// All of rayon's threads (callers that are not parallel themselves).
    All,
    /// One thread (callers that parallelise over heads or rows).
    One,
}

/// A row-major matrix operand: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

impl Mat {
    fn rm(ptr: *const f32, rs: usize) -> Self {
        Mat { ptr, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix with row stride `rs`.
    fn tr(ptr: *const f32, rs: usize) -> Self {
        Mat { ptr, rs: 1, cs: rs }
    }
    /// The columns from `c` on.
    ///
    /// # Safety
    /// `c` must be a column of the matrix.
    unsafe fn from_column(self, c: usize) -> Self {
        Mat {
            ptr: self.ptr.add(c * self.cs),
            ..self
        }
    }
}

/// Output columns per task of a GEMM whose right operand is a transposed matrix (see [`gemm`]).
const COLS_PER_TASK: usize = 128;

/// Elements of a transposed right operand from which its GEMM is split into column blocks: below,
/// gemm's serial packing is short and its own even split across threads wins (a 384-wide layer
/// would be 3 blocks on 2 threads).
const SPLIT_MIN_ELEMENTS: usize = 1 << 18;

// SAFETY: a `Mat` is a read-only view that the callers of the unsafe `gemm` vouch for; tasks of one
// GEMM only read it.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

/// The one GEMM wrapper: `dst (m × n, row stride dst_rs) = scale · lhs · rhs (+ dst if accumulate)`.
/// gemm splits the output, never the inner dimension, so the sums are the same for every thread
/// count.
///
/// gemm computes a row-major product as its transpose, whose left operand is `rhs`ᵀ; when that has
/// a non-unit row stride (`rhs` is a transposed matrix, as W in every linear layer's `x Wᵀ`) and
/// the product is not tall, gemm packs all of it **on the calling thread** before its workers start:
/// on two threads a serial 7–12 % of a LoRA fine-tuning step. Such products, when the operand holds
/// at least [`SPLIT_MIN_ELEMENTS`], are split here into blocks of [`COLS_PER_TASK`] output columns,
/// one task and a one-thread gemm each, so that the blocks are packed in parallel. The split
/// depends on the shapes only, never on the thread count, so neither do the bits.
///
/// # Safety
/// The pointers and strides must describe valid matrices of the given sizes, dst not overlapping
/// the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    threads: Threads,
) {
    if matches!(threads, Threads::All)
        && rhs.cs != 1
        && n >= 2 * COLS_PER_TASK
        && n * k >= SPLIT_MIN_ELEMENTS
    {
        use rayon::prelude::*;
        let dst = SyncPtr(dst);
        (0..n.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .for_each(|j| {
                let c0 = j * COLS_PER_TASK;
                // SAFETY: column c0 < n of rhs, and of dst below.
                let block = unsafe { rhs.from_column(c0) };
                // SAFETY: the block is the caller's matrices restricted to columns c0..c0 + cols.
                unsafe {
                    gemm_on(
                        (m, COLS_PER_TASK.min(n - c0), k),
                        dst.get().add(c0),
                        dst_rs,
                        accumulate,
                        lhs,
                        block,
                        scale,
                        gemm::Parallelism::None,
                    )
                }
            });
        return;
    }
    let par = match threads {
        Threads::All => match rayon::current_num_threads() {
            0 | 1 => gemm::Parallelism::None,
            n => gemm::Parallelism::Rayon(n),
        },
        Threads::One => gemm::Parallelism::None,
    };
    gemm_on((m, n, k), dst, dst_rs, accumulate, lhs, rhs, scale, par)
}

/// [`gemm`] with the given parallelism.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_on(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    par: gemm::Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        scale,
        false,
        false,
        false,
        par,
    )
}

/// `n` f32 written in full by `write` (a GEMM that does not accumulate): allocated without the
/// zeroing of `vec![0; n]`, a serial pass over the whole buffer on the calling thread, and most of
/// the memset time of a fine-tuning step (whose outputs are mostly GEMM outputs).
///
/// # Safety
/// `write` must write all `n` elements through the pointer it is given before it returns.
unsafe fn written(n: usize, write: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(n);
    write(v.as_mut_ptr());
    // SAFETY: the caller's contract: all n elements are initialised.
    v.set_len(n);
    v
}

/// `vec![0f32; n]`, zeroed by rayon's threads in blocks rather than by one memset on the calling
/// thread, where the other threads would wait (an op's output or gradient buffer that its parallel
/// passes then fill).
fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    if n < 2 * CHUNK {
        return vec![0f32; n];
    }
    let mut v = Vec::<f32>::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all n elements were written above.
    unsafe { v.set_len(n) };
    v
}

/// Raw pointer that tasks writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// Through a method, so that closures capture the whole (Send + Sync) wrapper, not its field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Column sums of g (rows × n), in fixed blocks of rows summed in order (deterministic).
fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    g.par_chunks(n * ROWS_PER_TASK)
        .map(|gs| {
            let mut s = vec![0f32; n];
            for r in gs.chunks(n) {
                s.iter_mut().zip(r).for_each(|(a, g)| *a += g);
            }
            s
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0f32; n], |mut a, c| {
            a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
            a
        })
}

#[cfg(test)]
mod tests;
