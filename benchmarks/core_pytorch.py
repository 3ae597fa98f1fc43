#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench core`: the same MoRAM layer math in eager PyTorch 2.11.

The layer follows the official X-TAIL `MoRAM_Linear.forward` as described in protocol section 1.2
(cat old and new atoms, normalize, topk + scatter of -inf, softmax / tau, eval gate, (z * w) B^T).
Prints one JSON object per line, like `moram-bench core`.
"""
import argparse

import torch
import torch.nn.functional as F
from timing import emit, timed


class MoRAMLinearRef(torch.nn.Module):
    def __init__(self, weight, bias, r_total, r=16, topk=16, temp=0.01, thr=0.2, scale=1.0):
        super().__init__()
        d_out, d_in = weight.shape
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)
        bound = 1 / d_in ** 0.5
        n_old = r_total - r
        self.old_A = (torch.rand(n_old, d_in) * 2 - 1) * bound if n_old else None
        self.old_B = torch.randn(d_out, n_old) * 0.02 if n_old else None
        self.A = torch.nn.Parameter((torch.rand(r, d_in) * 2 - 1) * bound)
        self.B = torch.nn.Parameter(torch.randn(d_out, r) * 0.02)
        self.topk, self.temp, self.thr, self.scale = topk, temp, thr, scale

    def forward(self, x):
        result = F.linear(x, self.weight, self.bias)
        # f32 atoms over a bf16 base (moram's bf16 base): the atoms see x in f32 and their delta is
        # cast back; no-ops in f32.
        x = x.to(self.A.dtype)
        A = torch.cat([self.old_A, self.A]) if self.old_A is not None else self.A
        B = torch.cat([self.old_B, self.B], 1) if self.old_B is not None else self.B
        z = F.linear(x, A)
        normed = F.normalize(z, dim=-1)
        k = max(self.topk, 2)
        vals, idx = normed.topk(k, dim=-1)
        masked = torch.full_like(normed, float("-inf")).scatter(-1, idx, vals)
        w = torch.softmax(masked / self.temp, dim=-1)
        if not self.training and self.thr > 0:
            w = w * (normed >= self.thr).float()
        out = F.linear(z * w, B)
        return result + (out * self.scale if self.scale != 1.0 else out).to(result.dtype)






def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    d, tokens = 768, (8, 197)
    weight = torch.randn(d, d) * 0.02
    bias = torch.randn(d) * 0.02
    x = torch.randn(*tokens, d)
    grad_y = torch.randn(*tokens, d)
    with torch.no_grad():
        emit("frozen_linear", timed(args.reps, lambda: F.linear(x, weight, bias)))
    for r_total in (16, 64, 160):
        layer = MoRAMLinearRef(weight, bias, r_total).eval()
        with torch.no_grad():
            emit(f"eval_R{r_total}", timed(args.reps, lambda: layer(x)))
        layer.train()

        def step():
            layer.zero_grad(set_to_none=False)
            (layer(x) * grad_y).sum().backward()

        emit(f"train_fwd_bwd_R{r_total}", timed(args.reps, step))
    layer = MoRAMLinearRef(weight, bias, 160).eval()
    x1 = x[:1, :1]
    with torch.no_grad():
        emit("eval_1tok_R160", timed(args.reps * 20, lambda: layer(x1)))


if __name__ == "__main__":
    main()
