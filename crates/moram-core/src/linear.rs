//! [`MoramLinear`]: a frozen linear layer plus an [`AtomBank`] (paper Eq. 4 applied to `x`).
//!
//! `y = W0 x + b + delta(x)`, where the base weight and bias keep their dtype (f32, f16, bf16) and
//! are never trainable, while the atoms and the routing always run in f32. The output has the
//! input's dtype.

use crate::bank::AtomBank;
use crate::config::MoramConfig;
use crate::error::{Error, Result};
use crate::stats::{ActivationStats, StatsMode};
use std::cell::RefCell;
use tch::{Kind, Tensor};

/// A frozen linear layer adapted with MoRAM atoms.
#[derive(Debug)]
pub struct MoramLinear {
    /// Base weight `(d_out, d_in)`, any float dtype, no gradient.
    weight: Tensor,
    /// Base bias `(d_out,)`, same dtype as the weight.
    bias: Option<Tensor>,
    bank: AtomBank,
    training: bool,
    recorder: RefCell<Option<ActivationStats>>,
    capture: RefCell<Capture>,
    /// Running `(sum x x^T (d_in, d_in) f64, tokens)` of the inputs, while recording.
    moments: RefCell<Option<(Tensor, u64)>>,
    /// Running `(sum x, sum x^2)` `(d_in,)` f64 and the token count of the inputs, while recording.
    feature_sums: RefCell<Option<(Tensor, Tensor, u64)>>,
    /// The first input tokens `(n, d_in)` f32 seen while recording, and how many to keep.
    sample: RefCell<Option<(Vec<Tensor>, i64, i64)>>,
    /// Task-gated atoms: the last task whose atoms each token may use (i64, broadcastable to the
    /// input's leading dimensions), set by the model around a pass; `None`: every atom.
    open_tasks: RefCell<Option<Tensor>>,
}

/// Per-feature statistics of a layer's inputs ([`MoramLinear::take_input_statistics`]).
#[derive(Debug)]
pub struct InputStatistics {
    /// Mean of each input feature `(d_in,)` f64.
    pub mean: Tensor,
    /// Population standard deviation of each input feature `(d_in,)` f64.
    pub std: Tensor,
    /// Tokens seen.
    pub tokens: u64,
}

#[derive(Debug, Default)]
struct Capture {
    on: bool,
    last: Option<Tensor>,
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

impl MoramLinear {
    /// Wraps a pretrained `weight` `(d_out, d_in)` and optional `bias` `(d_out,)` with an empty
    /// atom bank on the weight's device. The tensors are detached: they never receive gradient.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, config: &MoramConfig) -> Result<Self> {
        let size = weight.size();
        if size.len() != 2 {
            return Err(Error::Shape { what: "base weight".into(), expected: "(d_out, d_in)".into(), found: size });
        }
        let bank = AtomBank::new(size[1] as usize, size[0] as usize, config, weight.device())?;
        Self::with_bank(weight, bias, bank)
    }

    /// Wraps a pretrained weight with an existing bank (e.g. loaded from an adapter file).
    pub fn with_bank(weight: &Tensor, bias: Option<&Tensor>, bank: AtomBank) -> Result<Self> {
        let size = weight.size();
        let expected = [bank.d_out() as i64, bank.d_in() as i64];
        if size != expected {
            return Err(Error::Shape {
                what: "base weight".into(),
                expected: format!("{expected:?} (the atom bank's d_out x d_in)"),
                found: size,
            });
        }
        if !is_float(weight.kind()) {
            return Err(Error::Dtype {
                what: "base weight".into(),
                expected: "f32/f64/f16/bf16".into(),
                found: weight.kind(),
            });
        }
        let bias = match bias {
            Some(b) if b.size() != [expected[0]] => {
                return Err(Error::Shape {
                    what: "base bias".into(),
                    expected: format!("[{}]", expected[0]),
                    found: b.size(),
                })
            }
            Some(b) => Some(b.detach().to_kind(weight.kind())),
            None => None,
        };
        Ok(MoramLinear {
            weight: weight.detach(),
            bias,
            bank,
            training: false,
            recorder: RefCell::new(None),
            capture: RefCell::new(Capture::default()),
            moments: RefCell::new(None),
            feature_sums: RefCell::new(None),
            sample: RefCell::new(None),
            open_tasks: RefCell::new(None),
        })
    }

    /// `x` `(.., d_in)` -> `(.., d_out)` in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.last().copied() != Some(self.bank.d_in() as i64) {
            return Err(Error::Shape {
                what: "MoramLinear input".into(),
                expected: format!("[.., {}]", self.bank.d_in()),
                found: size,
            });
        }
        if !is_float(x.kind()) {
            return Err(Error::Dtype {
                what: "MoramLinear input".into(),
                expected: "a float dtype".into(),
                found: x.kind(),
            });
        }
        let base_kind = self.weight.kind();
        let base = crate::runtime::linear(&x.to_kind(base_kind), &self.weight, self.bias.as_ref());
        let dropout = self.bank.config().dropout;
        let xa = x.to_kind(Kind::Float);
        if let Some((sum, tokens)) = self.moments.borrow_mut().as_mut() {
            let flat = xa.detach().reshape([-1, size[size.len() - 1]]);
            // Accumulated in f32 (an f64 add of a d x d matrix per pass costs more than the product).
            let _ = sum.addmm_(&flat.tr(), &flat);
            *tokens += flat.size()[0] as u64;
        }
        if let Some((sum, squares, tokens)) = self.feature_sums.borrow_mut().as_mut() {
            let flat = xa.detach().reshape([-1, size[size.len() - 1]]).to_kind(Kind::Double);
            *sum += flat.sum_dim_intlist([0].as_slice(), false, Kind::Double);
            *squares += flat.square().sum_dim_intlist([0].as_slice(), false, Kind::Double);
            *tokens += flat.size()[0] as u64;
        }
        if let Some((kept, n, cap)) = self.sample.borrow_mut().as_mut() {
            if *n < *cap {
                let flat = xa.detach().reshape([-1, size[size.len() - 1]]);
                let take = flat.size()[0].min(*cap - *n);
                kept.push(flat.narrow(0, 0, take).copy());
                *n += take;
            }
        }
        if self.bank.needs_score_statistics() && !self.bank.is_empty() {
            return Err(Error::State(format!(
                "score_input = {:?} needs the inputs' statistics before the atoms route: \
                 record them with start_input_statistics and call set_score_statistics",
                self.bank.config().score_input
            )));
        }
        let xa = if self.training && dropout > 0.0 { xa.dropout(dropout, true) } else { xa };
        let Some(routed) = self.bank.route_for(&xa, self.training, self.open_tasks.borrow().as_ref()) else {
            return Ok(base.to_kind(x.kind()));
        };
        if let Some(stats) = self.recorder.borrow_mut().as_mut() {
            let w = match stats.mode {
                StatsMode::AsUsed => &routed.weights,
                StatsMode::BeforeGate => &routed.weights_before_gate,
            };
            stats.record_gated(w, routed.open.as_ref())?;
        }
        {
            let mut capture = self.capture.borrow_mut();
            if capture.on {
                capture.last = Some(routed.weights.detach());
            }
        }
        let y = if base_kind == Kind::Float {
            // One fused GEMM adds the values' contribution onto the base output.
            let d_out = self.bank.d_out() as i64;
            let r = routed.mixed.size().last().copied().unwrap_or(0);
            let rows = base.numel() as i64 / d_out.max(1);
            let out_shape = base.size();
            // Explicit row count: the sparse path may leave no atom at all (r = 0).
            base.reshape([rows, d_out]).addmm(&routed.mixed.reshape([rows, r]), &routed.values.tr()).reshape(out_shape)
        } else {
            base + routed.delta().to_kind(base_kind)
        };
        Ok(y.to_kind(x.kind()))
    }

    /// Training mode (dropout on, no threshold gate) or eval mode (gate on).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Whether the layer is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The atom bank.
    pub fn bank(&self) -> &AtomBank {
        &self.bank
    }

    /// The atom bank, mutably (begin/end tasks, freezing).
    pub fn bank_mut(&mut self) -> &mut AtomBank {
        &mut self.bank
    }

    /// Replaces the bank (e.g. with a pruned one); its widths must match the base weight.
    pub fn replace_bank(&mut self, bank: AtomBank) -> Result<AtomBank> {
        if (bank.d_in(), bank.d_out()) != (self.bank.d_in(), self.bank.d_out()) {
            return Err(Error::State(format!(
                "bank is {} -> {}, the layer {} -> {}",
                bank.d_in(),
                bank.d_out(),
                self.bank.d_in(),
                self.bank.d_out()
            )));
        }
        Ok(std::mem::replace(&mut self.bank, bank))
    }

    /// The frozen base weight `(d_out, d_in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The frozen base bias `(d_out,)`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Starts accumulating [`ActivationStats`] on every forward (replacing any running record).
    pub fn start_stats(&self, mode: StatsMode) {
        *self.recorder.borrow_mut() = Some(ActivationStats::new(self.bank.len(), mode));
    }

    /// Stops recording and returns what was gathered.
    pub fn take_stats(&self) -> Option<ActivationStats> {
        self.recorder.borrow_mut().take()
    }

    /// Starts accumulating the uncentred second moments `sum x x^T` of every input token (for the
    /// orthogonal-keys variant, [`crate::AtomBank::extend_key_basis`]), replacing any running record.
    pub fn start_input_moments(&self) {
        let d = self.bank.d_in() as i64;
        *self.moments.borrow_mut() = Some((Tensor::zeros([d, d], (Kind::Float, self.weight.device())), 0));
    }

    /// Stops recording and returns `(sum x x^T (d_in, d_in) f64, tokens seen)`.
    pub fn take_input_moments(&self) -> Option<(Tensor, u64)> {
        self.moments.borrow_mut().take().map(|(sum, n)| (sum.to_kind(Kind::Double), n))
    }

    /// Starts accumulating per-feature sums of every input token (for [`crate::ScoreInput`]
    /// statistics), replacing any running record.
    pub fn start_input_statistics(&self) {
        let d = self.bank.d_in() as i64;
        let zeros = || Tensor::zeros([d], (Kind::Double, self.weight.device()));
        *self.feature_sums.borrow_mut() = Some((zeros(), zeros(), 0));
    }

    /// Stops recording and returns the mean and standard deviation of every input feature (`None`
    /// when no recording ran or no token was seen).
    pub fn take_input_statistics(&self) -> Option<InputStatistics> {
        let (sum, squares, tokens) = self.feature_sums.borrow_mut().take()?;
        if tokens == 0 {
            return None;
        }
        let n = tokens as f64;
        let mean = sum / n;
        let var = (squares / n - mean.square()).clamp_min(0.0);
        Some(InputStatistics { std: var.sqrt(), mean, tokens })
    }

    /// Starts keeping the first `max_tokens` input tokens (e.g. to fit a threshold on them once a
    /// basis computed from the same pass exists), replacing any running record.
    pub fn start_input_sample(&self, max_tokens: usize) {
        *self.sample.borrow_mut() = Some((Vec::new(), 0, max_tokens as i64));
    }

    /// Stops keeping and returns the kept tokens `(n, d_in)` f32 (`None` when nothing was kept).
    pub fn take_input_sample(&self) -> Option<Tensor> {
        let (kept, _, _) = self.sample.borrow_mut().take()?;
        (!kept.is_empty()).then(|| Tensor::cat(&kept, 0))
    }

    /// Keeps (or stops keeping) the weights `(.., R)` of the last forward, for activation maps.
    pub fn set_capture(&self, on: bool) {
        let mut capture = self.capture.borrow_mut();
        capture.on = on;
        if !on {
            capture.last = None;
        }
    }

    /// Limits the atoms each token may use to those of tasks `<= open_tasks` (i64, broadcastable to
    /// the next inputs' leading dimensions: `(B, 1)` per sequence, `(1, N)` per packed token), until
    /// set to `None` (every atom). Task-gated atoms ([`crate::variants::task_gate`]): the model
    /// sets it around a pass from the task it recognised for each sequence.
    pub fn set_open_tasks(&self, open_tasks: Option<Tensor>) {
        *self.open_tasks.borrow_mut() = open_tasks;
    }

    /// Whether any recording of what passes through the layer is on (activation statistics, input
    /// moments, statistics or samples, weight capture), or a per-token limit on the atoms
    /// ([`MoramLinear::set_open_tasks`]): a caller that would skip tokens whose outputs it does not
    /// need must then run them all, since the records count every token and the limit is laid out
    /// per token.
    pub fn is_observed(&self) -> bool {
        self.open_tasks.borrow().is_some()
            || self.recorder.borrow().is_some()
            || self.capture.borrow().on
            || self.moments.borrow().is_some()
            || self.feature_sums.borrow().is_some()
            || self.sample.borrow().is_some()
    }

    /// The weights `(.., R)` of the last forward since capture was switched on.
    pub fn take_captured(&self) -> Option<Tensor> {
        self.capture.borrow_mut().last.take()
    }
}
