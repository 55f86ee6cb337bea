//! The building blocks the model files are made of — linear layers (with LoRA), norms, the causal
//! attention block — each loaded by HF name from a [`WeightSource`] and run through [`crate::ops`].
//!
//! Because every op has a backward pass, the same blocks serve inference and training; because
//! they read from a weight source, the same model file serves checkpoints and trainable variables.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::ops;
pub use crate::ops::Activation;
use crate::weights::{Lora, WeightSource};

/// One dense projection `x Wᵀ + b`, with an optional LoRA adapter.
#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<Lora>,
}

impl Dense {
    fn forward(&self, x: &Tensor, act: Option<Activation>) -> candle_core::Result<Tensor> {
        let Some(lora) = &self.lora else {
            return ops::linear(x, &self.weight, self.bias.as_ref(), act);
        };
        ops::lora_linear(
            x,
            &self.weight,
            self.bias.as_ref(),
            &lora.a,
            &lora.b,
            lora.scale,
            act,
        )
    }
}

/// A linear layer: one projection, or several projections side by side on the output dimension
/// (OLMo's q/k/v and up/gate). Side-by-side frozen projections are concatenated at load time into one
/// GEMM; trainable ones (variables or LoRA) stay apart, since a concatenated copy would neither pass
/// gradients to the variables nor see their updates.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    parts: Vec<Dense>,
}

impl Linear {
    /// Loads `{prefix}.weight` (out, in) and, if `bias`, `{prefix}.bias` (out), with the adapter the
    /// source attaches to `prefix`.
    pub(crate) fn load(
        w: &dyn WeightSource,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let dtype = w.dtype();
        let weight = w.get(&format!("{prefix}.weight"), &[out_dim, in_dim], dtype)?;
        let bias = if bias {
            Some(w.get(&format!("{prefix}.bias"), &[out_dim], dtype)?)
        } else {
            None
        };
        Ok(Linear {
            parts: vec![Dense {
                weight,
                bias,
                lora: w.lora(prefix),
            }],
        })
    }

    /// A projection with a given weight and no bias (a tied output head).
    pub(crate) fn tied(weight: Tensor) -> Self {
        Linear {
            parts: vec![Dense {
                weight,
                bias: None,
                lora: None,
            }],
        }
    }

    /// Layers side by side along the output dimension.
    pub(crate) fn cat(parts: Vec<Linear>) -> Result<Self> {
        let parts: Vec<Dense> = parts.into_iter().flat_map(|l| l.parts).collect();
        let frozen = parts.iter().all(|p| {
            p.lora.is_none()
                && !p.weight.is_variable()
                && p.bias.as_ref().is_none_or(|b| !b.is_variable())
        });
        let same_bias =
            parts.iter().all(|p| p.bias.is_some()) || parts.iter().all(|p| p.bias.is_none());
        if !frozen || !same_bias {
            return Ok(Linear { parts });
        }
        let ws: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let weight = Tensor::cat(&ws, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_some()) {
            let bs: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Linear {
            parts: vec![Dense {
                weight,
                bias,
                lora: None,
            }],
        })
    }

    /// `act(x Wᵀ + b)` over the last dimension.
    pub(crate) fn forward_act(
        &self,
        x: &Tensor,
        act: Option<Activation>,
    ) -> candle_core::Result<Tensor> {
        if let [one] = self.parts.as_slice() {
            return one.forward(x, act);
        }
        let ys = self
            .parts
            .iter()
            .map(|p| p.forward(x, None))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let y = Tensor::cat(&ys, candle_core::D::Minus1)?;
        match act {
            Some(a) => ops::activation(&y, a),
            None => Ok(y),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_act(x, None)
    }

    /// [`Linear::forward`] when `gradient_only` is false; else the same graph with the output of a
    /// LoRA projection not computed ([`ops::lora_linear_for_gradient`]), for an output that only
    /// adds into a layer output that is never read (the stack's [`crate::stack::LayerRun`]).
    pub(crate) fn forward_maybe_for_gradient(
        &self,
        x: &Tensor,
        gradient_only: bool,
    ) -> candle_core::Result<Tensor> {
        match self.parts.as_slice() {
            [Dense {
                weight,
                bias,
                lora: Some(lora),
            }] if gradient_only => ops::lora_linear_for_gradient(
                x,
                weight,
                bias.as_ref(),
                &lora.a,
                &lora.b,
                lora.scale,
            ),
            _ => self.forward(x),
        }
    }

    /// Causal self-attention of x (B, T, H) through this layer as the packed QKV projection:
    /// the op that projects inside when the layer is one plain projection, else the projection
    /// and then the attention op. Returns (B, T, heads·head_dim).
    pub(crate) fn attention(
        &self,
        x: &Tensor,
        spec: &ops::AttentionSpec,
        rotary: &ops::RotaryTables,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        match self.plain() {
            Some((w, bias)) if ops::fused_ok(&[x, w]) => ops::qkv_attention(
                x, w, bias, t, spec, rotary,
            )?
            .reshape((b, t, spec.heads * spec.head_dim)),
            _ => ops::attention(&self.forward(x)?, spec, rotary),
        }
    }

    /// The single weight and bias when the layer is one plain projection (what the fused QKV
    /// attention op takes).
    pub(crate) fn plain(&self) -> Option<(&Tensor, Option<&Tensor>)> {
        match self.parts.as_slice() {
            [Dense {
                weight,
                bias,
                lora: None,
            }] => Some((weight, bias.as_ref())),
            _ => None,
        }
    }
}

/// LayerNorm with f32 parameters (`weight`, `bias`), or without parameters (OLMo 1).
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn load(w: &dyn WeightSource, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.get(&format!("{prefix}.weight"), &[size], DType::F32)?,
            bias: w.get(&format!("{prefix}.bias"), &[size], DType::F32)?,
            eps,
        })
    }

    /// Non-parametric LayerNorm (weight 1, bias 0), as in OLMo 1.
    pub(crate) fn plain(w: &dyn WeightSource, size: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: Tensor::ones(size, DType::F32, w.device())?,
            bias: Tensor::zeros(size, DType::F32, w.device())?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// RMSNorm with an f32 weight, computed in f32 (Llama, OLMo 2).
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(crate) fn load(w: &dyn WeightSource, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: w.get(name, &[size], DType::F32)?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// A token embedding table (vocab, hidden).
pub(crate) fn embed(table: &Tensor, input_ids: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t) = input_ids.dims2()?;
    let h = table.dim(1)?;
    table
        .index_select(&input_ids.flatten_all()?, 0)?
        .reshape((b, t, h))
}
