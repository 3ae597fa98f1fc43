//! A prefix cursor over a tensor provider (candle's `VarBuilder::pp` idea): model code asks for
//! `q_proj.weight` under `model.layers.3.self_attn`, and one provider maps Hugging Face keys to
//! whatever the checkpoint stores (a safetensors file, a GGUF file with llama.cpp names).

use crate::error::Result;
use crate::linear::AdaptableLinear;
use tch::Tensor;

/// Loads the tensor at a full Hugging Face key, checking it has the given shape.
pub(crate) type Provider<'a> = dyn Fn(&str, &[i64]) -> Result<Tensor> + 'a;

/// A provider and the key prefix of the module being built.
pub(crate) struct Vars<'a> {
    get: &'a Provider<'a>,
    prefix: String,
}

impl<'a> Vars<'a> {
    /// The root: keys are passed through unchanged.
    pub(crate) fn root(get: &'a Provider<'a>) -> Self {
        Vars { get, prefix: String::new() }
    }

    /// The cursor for sub-module `name` (`pp("model").pp("layers.0")`).
    pub(crate) fn pp(&self, name: impl AsRef<str>) -> Vars<'a> {
        Vars { get: self.get, prefix: self.key(name.as_ref()) }
    }

    /// The full key of `name` under this prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Tensor `name` under this prefix, of `shape`.
    pub(crate) fn get(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        (self.get)(&self.key(name), shape)
    }

    /// A frozen linear layer at this prefix: `weight` `[out, in]` and, with `bias`, `bias` `[out]`.
    pub(crate) fn linear(&self, shape: &[i64], bias: bool) -> Result<AdaptableLinear> {
        let bias = if bias { Some(self.get("bias", &shape[..1])?) } else { None };
        Ok(AdaptableLinear::frozen(self.get("weight", shape)?, bias))
    }
}
