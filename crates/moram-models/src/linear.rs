//! [`AdaptableLinear`]: a frozen linear layer that a [`crate::TargetSpec`] may turn into a
//! [`MoramLinear`] (injection at construction time, by module path).

use crate::error::Result;
use crate::target::{LinearSite, ModuleNames, TargetSpec};
use moram_core::{MoramConfig, MoramLinear};
use tch::Tensor;

/// Injection shared by every model: adapts the layers (module path, layer) whose path `spec`
/// selects among `sites`, and returns the selected paths.
pub(crate) fn inject<'a>(
    spec: &TargetSpec,
    names: &ModuleNames,
    sites: &[LinearSite],
    layers: impl IntoIterator<Item = (String, &'a mut AdaptableLinear)>,
    config: &MoramConfig,
) -> Result<Vec<String>> {
    config.validate()?;
    let chosen: Vec<String> = spec.select(sites, names)?.into_iter().map(|s| s.path.clone()).collect();
    for (path, layer) in layers {
        if chosen.contains(&path) {
            layer.adapt(config)?;
        }
    }
    Ok(chosen)
}

/// A pretrained linear layer: frozen, or adapted with MoRAM atoms.
#[derive(Debug)]
pub enum AdaptableLinear {
    /// Frozen weight `(d_out, d_in)` and optional bias `(d_out,)`, no gradient.
    Frozen {
        /// Weight `(d_out, d_in)`.
        weight: Tensor,
        /// Bias `(d_out,)`.
        bias: Option<Tensor>,
    },
    /// The same weights plus an atom bank (boxed: a bank is much larger than two tensor handles).
    Moram(Box<MoramLinear>),
}

impl AdaptableLinear {
    /// A frozen layer (the tensors are detached).
    pub fn frozen(weight: Tensor, bias: Option<Tensor>) -> Self {
        AdaptableLinear::Frozen { weight: weight.detach(), bias: bias.map(|b| b.detach()) }
    }

    /// `(.., d_in)` -> `(.., d_out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            AdaptableLinear::Frozen { weight, bias } => Ok(moram_core::runtime::linear(x, weight, bias.as_ref())),
            AdaptableLinear::Moram(m) => Ok(m.forward(x)?),
        }
    }

    /// Turns a frozen layer into a MoRAM layer with an empty bank (no-op if already adapted).
    pub fn adapt(&mut self, config: &MoramConfig) -> Result<()> {
        if let AdaptableLinear::Frozen { weight, bias } = self {
            let m = MoramLinear::new(weight, bias.as_ref(), config)?;
            *self = AdaptableLinear::Moram(Box::new(m));
        }
        Ok(())
    }

    /// The MoRAM layer, when adapted.
    pub fn moram(&self) -> Option<&MoramLinear> {
        match self {
            AdaptableLinear::Moram(m) => Some(m),
            AdaptableLinear::Frozen { .. } => None,
        }
    }

    /// The MoRAM layer, mutably, when adapted.
    pub fn moram_mut(&mut self) -> Option<&mut MoramLinear> {
        match self {
            AdaptableLinear::Moram(m) => Some(m),
            AdaptableLinear::Frozen { .. } => None,
        }
    }

    /// The frozen base weight `(d_out, d_in)`.
    pub fn weight(&self) -> &Tensor {
        match self {
            AdaptableLinear::Frozen { weight, .. } => weight,
            AdaptableLinear::Moram(m) => m.weight(),
        }
    }

    /// The frozen base bias `(d_out,)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        match self {
            AdaptableLinear::Frozen { bias, .. } => bias.as_ref(),
            AdaptableLinear::Moram(m) => m.bias(),
        }
    }
}

/// Starts task `task` on every layer (shared by the CLIP and LLM models).
pub(crate) fn begin_task_all<'a>(layers: impl IntoIterator<Item = &'a mut MoramLinear>, task: u32) -> Result<()> {
    for m in layers {
        m.bank_mut().begin_task(task)?;
    }
    Ok(())
}

/// Training or eval mode on every layer.
pub(crate) fn set_training_all<'a>(layers: impl IntoIterator<Item = &'a mut MoramLinear>, training: bool) {
    for m in layers {
        m.set_training(training);
    }
}

/// The current task's trainable tensors of every layer.
pub(crate) fn trainable_all<'a>(layers: impl IntoIterator<Item = &'a MoramLinear>) -> Vec<Tensor> {
    layers.into_iter().flat_map(|m| m.bank().trainable_tensors()).collect()
}
