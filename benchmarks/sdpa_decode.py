#!/usr/bin/env python3
"""libtorch's scaled_dot_product_attention on this CPU, f32 against bf16, at SmolLM2-135M's head
shapes (9 query heads, 3 KV heads, head size 64), one thread: decoding (one query per row against
L cached keys) and a causal prefill. The figures behind "bf16 decoding gains little" in
results/train-memory.md. Run with the fixtures' virtual environment (torch 2.11.0):
`~/.cache/moram/venv-torch-2.11.0/bin/python benchmarks/sdpa_decode.py`."""
import time

import torch
import torch.nn.functional as F


def timed(f, n):
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e3


def main():
    torch.set_num_threads(1)
    for length in (160, 576, 4096):
        for batch in (1, 4, 16):
            q, k, v = torch.randn(batch, 9, 1, 64), torch.randn(batch, 3, length, 64), torch.randn(batch, 3, length, 64)
            qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
            f32 = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), 20)
            bf16 = timed(lambda: F.scaled_dot_product_attention(qb, kb, vb, enable_gqa=True), 20)
            print(f"decode L={length} B={batch}: f32 {f32:.3f} ms, bf16 {bf16:.3f} ms")
    for length, batch in ((160, 16), (512, 4), (4096, 1)):
        q, k, v = torch.randn(batch, 9, length, 64), torch.randn(batch, 3, length, 64), torch.randn(batch, 3, length, 64)
        qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
        f32 = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), 3)
        bf16 = timed(lambda: F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True), 3)
        print(f"prefill L={length} B={batch}: f32 {f32:.1f} ms, bf16 {bf16:.1f} ms")


if __name__ == "__main__":
    main()
