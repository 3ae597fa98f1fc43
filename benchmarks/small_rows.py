#!/usr/bin/env python3
"""A decoding step's matrix products on this CPU with few rows, two ways: libtorch's usual
`linear(x, W)` (= x @ W^T) and the swapped `(W @ x^T)^T`, one thread, for the 7 projections of all
30 of SmolLM2-135M's blocks (distinct weights, 0.42 GB in f32: as in decoding, they do not stay in
cache) and its tied LM head (49,152 x 576), f32 and bf16. The figures behind
`moram_core::runtime::linear` (results/small-rows.md). Run with the fixtures' virtual environment
(torch 2.11.0): `~/.cache/moram/venv-torch-2.11.0/bin/python benchmarks/small_rows.py`."""
import torch
import torch.nn.functional as F
from timing import timed

# (out, in) of q, k, v, o, gate, up, down.
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        weights = [torch.randn(o, i).to(dtype) for _ in range(30) for (o, i) in SHAPES]
        head = torch.randn(49152, 576).to(dtype)
        for rows in (1, 2, 3, 4, 5, 6, 8, 16):
            x = {576: torch.randn(rows, 576).to(dtype), 1536: torch.randn(rows, 1536).to(dtype)}
            # Median CPU ms of 5 calls, after warm-up.
            usual = timed(5, lambda: [F.linear(x[w.shape[1]], w) for w in weights])[1]
            swapped = timed(5, lambda: [(w @ x[w.shape[1]].t()).t() for w in weights])[1]
            head_usual = timed(5, lambda: F.linear(x[576], head))[1]
            head_swapped = timed(5, lambda: (head @ x[576].t()).t())[1]
            name = "f32" if dtype == torch.float32 else "bf16"
            print(
                f"{name} rows={rows}: blocks {usual:.1f} ms usual, {swapped:.1f} ms swapped; "
                f"head {head_usual:.1f} ms usual, {head_swapped:.1f} ms swapped"
            )


if __name__ == "__main__":
    main()
