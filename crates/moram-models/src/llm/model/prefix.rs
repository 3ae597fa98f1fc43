//! The frozen leading blocks (those without MoRAM layers): what they compute never changes while
//! atoms train, so it is computed once per example and continued from ([`FrozenPrefix`]).

use super::{CausalLm, FrozenPrefix, KvCache, Outputs};
use crate::error::{Error, Result};
use tch::Tensor;

impl CausalLm {
    /// Number of leading blocks without any MoRAM layer: what they compute never changes while
    /// atoms are trained, so it can be computed once ([`CausalLm::frozen_prefix`]).
    pub fn frozen_prefix_blocks(&self) -> usize {
        self.blocks.iter().take_while(|b| b.linears().iter().all(|l| l.moram().is_none())).count()
    }

    /// Runs the frozen leading blocks ([`CausalLm::frozen_prefix_blocks`]) once for token ids
    /// `(B, L)` at `positions`, with `keys_valid` as in [`CausalLm::forward_padded`]: the hidden
    /// states entering the first adapted block and (with `keep_kv`) the prefix blocks' keys and
    /// values. [`CausalLm::causal_lm_loss_from`] and [`CausalLm::generate_with_prefixes`] start from it.
    pub fn frozen_prefix(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        keep_kv: bool,
    ) -> Result<FrozenPrefix> {
        self.frozen_prefix_of(ids, positions, keys_valid, None, keep_kv)
    }

    /// [`CausalLm::frozen_prefix`] of rows laid out as `forward`'s `keys_valid` or `segments` say.
    pub(crate) fn frozen_prefix_of(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        segments: Option<&[i64]>,
        keep_kv: bool,
    ) -> Result<FrozenPrefix> {
        let _guard = tch::no_grad_guard();
        let blocks = self.frozen_prefix_blocks();
        let mut cache = KvCache::default();
        let h = self.embed_tokens(ids)?;
        let hidden = self.run_blocks(h, 0..blocks, positions, keys_valid, segments, &mut cache, Outputs::Every)?;
        let kv = if keep_kv {
            Some(cache.layers.iter().take(blocks).flatten().map(|slot| slot.kv()).collect())
        } else {
            None
        };
        Ok(FrozenPrefix { blocks, hidden, kv, segments: segments.map(<[i64]>::to_vec) })
    }

    /// Continues a [`FrozenPrefix`] of a whole prompt batch through the remaining blocks, filling
    /// `cache` (which must be empty) for every block: the hidden states before the final norm
    /// that `outputs` asks for, equal to [`CausalLm::hidden_states`]'s on the same inputs.
    pub(crate) fn hidden_states_from(
        &self,
        prefix: &FrozenPrefix,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        cache: &mut KvCache,
        outputs: Outputs<'_>,
    ) -> Result<Tensor> {
        self.check_prefix(prefix)?;
        if !cache.is_empty() {
            return Err(Error::Input("a frozen prefix starts a sequence: the KV cache must be empty".into()));
        }
        let kv = prefix.kv.as_ref().ok_or_else(|| {
            Error::Input("this frozen prefix kept no keys/values (computed with keep_kv = false)".into())
        })?;
        cache.layers = (0..self.blocks.len()).map(|_| None).collect();
        for (slot, (k, v)) in cache.layers.iter_mut().zip(kv) {
            *slot = Some(crate::llm::attention::KvSlot::new(k.shallow_clone(), v.shallow_clone()));
        }
        let h = prefix.hidden.shallow_clone();
        let segments = prefix.segments.as_deref();
        self.run_blocks(h, prefix.blocks..self.blocks.len(), positions, keys_valid, segments, cache, outputs)
    }

    /// Whether `prefix` still describes this model: the blocks it covers must still be free of atoms.
    fn check_prefix(&self, prefix: &FrozenPrefix) -> Result<()> {
        if prefix.blocks > self.frozen_prefix_blocks() {
            return Err(Error::Input(format!(
                "a frozen prefix over {} blocks is stale: block {} has MoRAM layers now",
                prefix.blocks,
                self.frozen_prefix_blocks()
            )));
        }
        Ok(())
    }
}
