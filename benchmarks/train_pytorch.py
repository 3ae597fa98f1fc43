#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench train`: the job a TRACE-style continual-learning run waits for,
in `transformers` 4.57.1 with the official MoRAM layer math injected (`core_pytorch.MoRAMLinearRef`,
one task of r = 8 atoms, top-k 8, tau 0.03, delta 0.2, value scale 2, dropout 0; the demo's
settings) on every linear layer of the last 8 of SmolLM2-135M's 30 blocks, base weights frozen.
With `--bf16` the model is bf16 and the atoms stay f32, as moram's bf16 base (rows `<case>_bf16`).

Cases (one per process, so the peak RSS printed is the case's own; `batch.py` builds the inputs
both sides use):
- `train_<L>`: one optimiser step: forward with the causal-LM loss (transformers computes every
  position's logits), backward, global-norm clipping at 1.0, AdamW (torch.optim);
- `eval_<kind>`: batched greedy generation with left padding (`generate`, KV cache, eval gate);
  `eval_repeat` generates from `eval_short`'s prompts like any call (transformers keeps nothing
  between calls; moram's side reuses its frozen blocks' pass from the first call).
Prints one JSON object per line, like `moram-bench train`.
"""
import argparse
import pathlib
import resource

import torch
from batch import eval_batch, train_batch
from core_pytorch import MoRAMLinearRef
from timing import emit, served, timed
from transformers import AutoModelForCausalLM

MODULES = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
           ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")]


def inject(model, blocks):
    torch.manual_seed(0)
    params = []
    for i in blocks:
        layer = model.model.layers[i]
        for parent, name in MODULES:
            owner = getattr(layer, parent)
            base = getattr(owner, name)
            bias = base.bias if base.bias is not None else torch.zeros(base.out_features, dtype=base.weight.dtype)
            m = MoRAMLinearRef(base.weight.detach(), bias.detach(), r_total=8, r=8, topk=8, temp=0.03, thr=0.2,
                               scale=2.0)
            setattr(owner, name, m)
            params += [m.A, m.B]
    return params


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--serve", action="store_true", help="timed calls on request (`run` / `done` on stdin)")
    ap.add_argument("--bf16", action="store_true", help="bf16 base weights and activations, atoms in f32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    path = pathlib.Path(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 torch_dtype=torch.bfloat16 if args.bf16 else torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    n = model.config.num_hidden_layers
    params = inject(model, range(n - 8, n))
    loaded = peak_mb()
    kind, arg = args.case.split("_", 1)
    if kind == "train":
        model.train()
        ids, labels, mask = (torch.tensor(t) for t in train_batch(int(arg)))
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0)

        def step():
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=False)

        t = served(step) if args.serve else timed(args.reps, step)
    else:
        model.eval()
        prompts, new_tokens = eval_batch(arg)
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

        def gen():
            with torch.no_grad():
                out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)
            assert out.shape[1] == width + new_tokens

        t = served(gen) if args.serve else timed(args.reps, gen)
    emit(args.case + ("_bf16" if args.bf16 else ""), t, peak_rss_mb=peak_mb(), loaded_rss_mb=loaded)


if __name__ == "__main__":
    main()
