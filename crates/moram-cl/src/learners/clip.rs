//! X-TAIL on CLIP (protocol 3.8-3.9): image-to-text cross-entropy over seen + current class
//! prompts with the seen columns masked, plus the batch-wise text-side term; evaluation of every
//! domain against the union of all domains' class prompts (task-agnostic, offset labels).

use crate::config::{DataFormat, RunConfig};
use crate::data::folders::{folder_task, FolderOptions};
use crate::data::idx::idx_tasks;
use crate::data::ImageTask;
use crate::error::{Error, Result};
use crate::learner::Learner;
use moram_core::{MoramConfig, MoramLinear};
use moram_models::clip::{normalize, ClipConfig, ClipModel, ClipTokenizer};
use moram_models::{TargetSpec, WeightSource};
use tch::{Kind, Tensor};

/// Logit scale of X-TAIL's loss and evaluation (the pretrained CLIP value, hard-coded there).
pub const LOGIT_SCALE: f64 = 100.0;

/// The atom weight of each task's atoms on each patch of one image ([`ClipLearner::patch_maps`]).
#[derive(Debug)]
pub struct PatchMap {
    /// The task the image is from.
    pub task: String,
    /// The preprocessed image `(3, H, W)` (normalised, as the model saw it).
    pub image: Tensor,
    /// `maps[s][p]`: summed weight of task `s`'s atoms on patch `p` (row-major `grid x grid`).
    pub maps: Vec<Vec<f64>>,
    /// Patches per side.
    pub grid: usize,
}

/// CLIP learning a sequence of image domains.
#[derive(Debug)]
pub struct ClipLearner {
    model: ClipModel,
    tokenizer: ClipTokenizer,
    tasks: Vec<ImageTask>,
    /// Text embeddings of every class seen before the current task `(n_seen, E)`.
    seen: Option<Tensor>,
    n_seen: usize,
    /// Text embeddings of every class of every domain, computed once per evaluation row.
    all_text: Option<Tensor>,
    eval_batch: usize,
    /// Training batches drawn in the current task (seeds the augmentation).
    calls: u64,
}

impl ClipLearner {
    /// Injects MoRAM layers as `targets` says and checks every task.
    pub fn new(
        mut model: ClipModel,
        tasks: Vec<ImageTask>,
        targets: &TargetSpec,
        moram: &MoramConfig,
        eval_batch: usize,
    ) -> Result<Self> {
        for t in &tasks {
            t.validate()?;
        }
        model.inject(targets, moram)?;
        let context = model.config().text.max_position_embeddings as usize;
        Ok(ClipLearner {
            model,
            tokenizer: ClipTokenizer::new().with_context_length(context),
            tasks,
            seen: None,
            n_seen: 0,
            all_text: None,
            eval_batch: eval_batch.max(1),
            calls: 0,
        })
    }

    /// Builds the learner a run config describes (`[model]` a CLIP checkpoint folder, `config.json`
    /// plus safetensors in Hugging Face or OpenAI layout; `[data]` folder-per-class image domains,
    /// an IDX set or the X-TAIL datasets); [`crate::learners::build`] calls it.
    pub fn from_config(run: &RunConfig) -> Result<Self> {
        let (model, data) = run.model_and_data()?;
        let moram = run.layer_config()?;
        let (eval_batch, seed) = (run.evaluation.batch_size, run.seed);
        let config = ClipConfig::from_hf_json(model.path.join("config.json"))?;
        let opts = FolderOptions {
            shots: data.shots.unwrap_or(16),
            test_per_class: data.test_per_class,
            template: data.template.clone().unwrap_or_else(|| "a photo of a {}.".into()),
            size: config.vision.image_size as usize,
            seed,
        };
        let mut problems = Vec::new();
        let mut tasks = Vec::new();
        if data.format == DataFormat::Xtail {
            let o = crate::data::xtail::XtailOptions {
                shots: data.shots.unwrap_or(16),
                test_per_class: data.test_per_class,
                size: opts.size,
                seed,
                shot_cache: data.shot_cache.clone(),
            };
            tasks = crate::data::xtail::xtail_tasks(&data.dir, &data.tasks, &o)?;
        } else if data.format == DataFormat::Idx {
            let classes = data
                .classes
                .as_ref()
                .ok_or_else(|| Error::config("data.classes", "an IDX set needs its class names"))?;
            tasks = idx_tasks(
                &data.dir,
                &data.tasks,
                classes,
                data.classes_per_task.unwrap_or(1),
                &opts.template,
                opts.shots,
                opts.test_per_class,
                opts.size,
                seed,
            )?;
        } else {
            for (i, name) in data.tasks.iter().enumerate() {
                let o = FolderOptions { seed: seed.wrapping_add(i as u64), ..opts.clone() };
                match folder_task(name, &data.dir.join(name), &o) {
                    Ok(t) => tasks.push(t),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        crate::data::all_problems(&data.dir, &problems)?;
        let device = model.device.resolve()?;
        let source = WeightSource::open(&model.path)?;
        let clip = ClipModel::load(&source, &config, None, model.dtype.kind(), device)?;
        Self::new(clip, tasks, &model.targets, &moram, eval_batch)
    }

    /// Per-patch activation maps (paper Figs. 3, 6, 7): for the first test image of each task, the
    /// weight mass of each task's atoms on every image patch in the last adapted vision layer.
    /// Empty when no vision layer is adapted.
    pub fn patch_maps(&self) -> Result<Vec<PatchMap>> {
        let model = &self.model;
        let Some((layer, atom_task)) = model
            .moram_layers()
            .into_iter()
            .rfind(|(p, _)| p.starts_with("vision_model"))
            .map(|(p, m)| (p, m.bank().atom_task().to_vec()))
        else {
            return Ok(Vec::new());
        };
        let _guard = tch::no_grad_guard();
        model.set_capture(&layer, true)?;
        let mut out = Vec::new();
        for task in &self.tasks {
            let x = task.test_images.batch(&[0], None)?.to_device(model.device());
            let _ = model.encode_image(&x)?;
            let w = model
                .take_captured(&layer)
                .ok_or_else(|| Error::task(&layer, "no atom weights were captured"))?
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Double);
            let (l, r) = (w.size()[1], w.size()[2]);
            let grid = ((l - 1) as f64).sqrt().round() as i64;
            let w = w.get(0).narrow(0, 1, grid * grid);
            let mut maps = Vec::new();
            for s in 0..self.tasks.len() {
                let cols: Vec<i64> = (0..r).filter(|&a| atom_task.get(a as usize) == Some(&(s as u32))).collect();
                maps.push(if cols.is_empty() {
                    vec![0.0; (grid * grid) as usize]
                } else {
                    // cpu: the captured weights were moved to the CPU above.
                    let idx = Tensor::from_slice(&cols);
                    Vec::<f64>::try_from(w.index_select(1, &idx).sum_dim_intlist(
                        [1i64].as_slice(),
                        false,
                        Kind::Double,
                    ))?
                });
            }
            out.push(PatchMap {
                task: task.name.clone(),
                image: x.to_device(tch::Device::Cpu).get(0),
                maps,
                grid: grid as usize,
            });
        }
        model.set_capture(&layer, false)?;
        Ok(out)
    }

    /// The tasks, in training order.
    pub fn tasks(&self) -> &[ImageTask] {
        &self.tasks
    }

    /// The model.
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    fn encode_prompts(&self, prompts: &[String]) -> Result<Tensor> {
        let device = self.model.device();
        let ids = self.tokenizer.tokenize_batch(prompts).to_device(device);
        Ok(normalize(&self.model.encode_text(&ids)?))
    }

    fn offset(&self, task: usize) -> usize {
        self.tasks[..task].iter().map(|t| t.classnames.len()).sum()
    }
}

impl Learner for ClipLearner {
    fn task_names(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }

    fn architecture(&self) -> Option<String> {
        Some("clip".into())
    }

    fn train_len(&self, task: usize) -> usize {
        self.tasks.get(task).map_or(0, |t| t.train_labels.len())
    }

    fn moram_layers(&self) -> Vec<(String, &MoramLinear)> {
        self.model.moram_layers()
    }

    fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)> {
        self.model.moram_layers_mut()
    }

    fn total_parameters(&self) -> usize {
        self.model.parameter_count()
    }

    /// Seen-class embeddings under `no_grad`, each domain's template, in task order, with the model
    /// in eval mode and the fresh atoms present (protocol 3.8 point 5, A9).
    fn prepare_task(&mut self, task: usize) -> Result<()> {
        self.calls = 0;
        self.n_seen = self.offset(task);
        self.seen = if task == 0 {
            None
        } else {
            let _guard = tch::no_grad_guard();
            let prompts: Vec<String> = self.tasks[..task].iter().flat_map(ImageTask::prompts).collect();
            Some(self.encode_prompts(&prompts)?)
        };
        Ok(())
    }

    fn loss(&mut self, task: usize, indices: &[usize]) -> Result<Tensor> {
        let t = &self.tasks[task];
        // Augmentation seeded by (task, call): a resumed task draws the same crops again.
        self.calls += 1;
        let seed = (task as u64) << 32 | self.calls;
        let images = t.train_images.batch(indices, Some(seed))?.to_device(self.model.device());
        let n_seen = self.n_seen as i64;
        let labels: Vec<i64> = indices.iter().map(|&i| t.train_labels[i] + n_seen).collect();
        let cur = self.encode_prompts(&t.prompts())?;
        let e = match &self.seen {
            Some(seen) => Tensor::cat(&[seen.to_device(cur.device()), cur], 0),
            None => cur,
        };
        let f = normalize(&self.model.encode_image(&images)?).to_kind(Kind::Float);
        let e = e.to_kind(Kind::Float);
        let labels_t = Tensor::from_slice(&labels).to_device(f.device());
        let logits = f.matmul(&e.tr()) * LOGIT_SCALE;
        if n_seen > 0 {
            let _ = logits.narrow(1, 0, n_seen).fill_(f64::NEG_INFINITY);
        }
        let ce_i = logits.cross_entropy_for_logits(&labels_t);
        // Text side: rows are classes, a softmax over the batch, soft targets M[c, b] = [y_b == c],
        // mean over every class row (absent classes contribute 0 but count).
        let rows = e.size()[0];
        let t_logits = e.matmul(&f.tr()) * LOGIT_SCALE;
        let classes = Tensor::arange(rows, (Kind::Int64, f.device())).unsqueeze(1);
        let m = classes.eq_tensor(&labels_t.unsqueeze(0)).to_kind(Kind::Float);
        let loss_t = -(m * t_logits.log_softmax(1, Kind::Float)).sum(Kind::Float) / rows as f64;
        Ok(ce_i + loss_t)
    }

    fn begin_evaluation(&mut self) -> Result<()> {
        let prompts: Vec<String> = self.tasks.iter().flat_map(ImageTask::prompts).collect();
        // f32 once here rather than per evaluation batch.
        self.all_text = Some(self.encode_prompts(&prompts)?.to_kind(Kind::Float));
        Ok(())
    }

    fn eval_len(&self, task: usize) -> Option<usize> {
        Some(self.tasks[task].test_labels.len())
    }

    fn evaluate_examples(
        &mut self,
        task: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<(f64, serde_json::Value)>> {
        if self.all_text.is_none() {
            self.begin_evaluation()?;
        }
        let text = self.all_text.as_ref().ok_or_else(|| Error::task("evaluation", "no text embeddings"))?;
        let t = &self.tasks[task];
        let labels = t.test_labels.get(range.clone()).ok_or_else(|| {
            Error::task(&t.name, format!("test images {range:?} out of range (it has {})", t.test_labels.len()))
        })?;
        let offset = self.offset(task) as i64;
        let mut scores = Vec::with_capacity(labels.len());
        for (idx, labels) in
            range.collect::<Vec<_>>().chunks(self.eval_batch.max(1)).zip(labels.chunks(self.eval_batch.max(1)))
        {
            let images = t.test_images.batch(idx, None)?.to_device(self.model.device());
            let f = normalize(&self.model.encode_image(&images)?).to_kind(Kind::Float);
            let pred = f.matmul(&text.tr()).argmax(1, false).to_device(tch::Device::Cpu);
            let pred = Vec::<i64>::try_from(pred)?;
            scores.extend(
                pred.iter()
                    .zip(labels)
                    .map(|(p, l)| (if *p == *l + offset { 100.0 } else { 0.0 }, serde_json::Value::Null)),
            );
        }
        Ok(scores)
    }

    fn evaluate(&mut self, task: usize) -> Result<f64> {
        let n = self.tasks[task].test_labels.len();
        let scored = self.evaluate_examples(task, 0..n)?;
        if scored.is_empty() {
            return Err(Error::task(&self.tasks[task].name, "has no test image"));
        }
        Ok(scored.iter().map(|(s, _)| s).sum::<f64>() / scored.len() as f64)
    }
}
