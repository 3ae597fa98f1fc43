#!/usr/bin/env python3
"""Rates of the kernels both sides of `cargo xtask bench train` spend their time in, at SmolLM2-135M's
shapes, one thread, f32 (libtorch 2.11's CPU kernels: MKL sgemm and the flash attention kernel, the
same in PyTorch and in moram's libtorch). Answers what the 4,096-token step and the short prefill
could gain from faster kernels (benchmarks/results/eval-profile.md):

- causal flash attention at 4,096 tokens (9 query heads, 3 key/value heads, head size 64), forward
  and forward + backward, in GFLOP/s counting the causal half of QK^T and AV (backward: 2.5x
  forward's products), and the same forward as chunked query blocks (matmul, mask, softmax,
  matmul) with the query heads of a group stacked, the alternative a library could write without a
  kernel of its own; and the flash kernel's forward and forward + backward on bf16 tensors;
- the ceiling of any attention kernel built from MKL products and libtorch's vectorised softmax
  (one 256-query x 512-key block: products alone and with the softmax);
- the projections (`x @ W^T`) at 2,080 rows (the short prefill's real tokens) and 4,096, each alone
  and q/k/v or gate/up fused into one product;
- one decoding step's products for 4-32 rows with cold weights (all 30 blocks' projections and the
  LM head, 541 MB, more than the caches hold), as `x @ W^T` and swapped (`(W @ x^T)^T`): the floor
  of a decoding step's time;
- one-query attention over a KV cache (decoding): libtorch's kernel against the three query heads
  of each group stacked into one batched product (`matmul`, mask, softmax, `matmul`).

Run: `~/.cache/moram/venv-torch-2.11.0/bin/python benchmarks/kernel_rates.py [SECTION ...]`
(sections: attention, attention_ceiling, projections, decode_step, decode_attention; all by
default; prints lines).
"""
import math
import time

import torch
import torch.nn.functional as F

L, HEADS, KV, D = 4096, 9, 3, 64


def best_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def attention():
    q, k, v = torch.randn(1, HEADS, L, D), torch.randn(1, KV, L, D), torch.randn(1, KV, L, D)
    causal_flops = 2 * 2 * L * L / 2 * D * HEADS

    def flash():
        with torch.no_grad():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def chunked(c):
        group = HEADS // KV
        with torch.no_grad():
            qq, kt, out = q.view(KV, group, L, D) / math.sqrt(D), k[0].transpose(1, 2), torch.empty(KV, group, L, D)
            for s in range(0, L, c):
                e = min(s + c, L)
                scores = torch.bmm(qq[:, :, s:e].reshape(KV, group * (e - s), D), kt[:, :, :e]).view(KV, group, e - s, e)
                scores[:, :, :, s:e].masked_fill_(torch.ones(e - s, e - s, dtype=torch.bool).triu(1), float("-inf"))
                p = torch.softmax(scores, -1).view(KV, group * (e - s), e)
                out[:, :, s:e] = torch.bmm(p, v[0][:, :e]).view(KV, group, e - s, D)
        return out.view(1, HEADS, L, D)

    assert (flash() - chunked(512)).abs().max().item() < 1e-4
    ms = best_ms(flash, 3)
    print(f"flash attention forward, L={L}: {ms:.0f} ms, {causal_flops / ms / 1e6:.1f} GFLOP/s")
    for c in (256, 512, 1024):
        ms = best_ms(lambda: chunked(c), 3)
        print(f"chunked attention forward ({c}-query blocks): {ms:.0f} ms, {causal_flops / ms / 1e6:.1f} GFLOP/s")
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def both():
        F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True).sum().backward()

    ms = best_ms(both, 3)
    print(f"flash attention forward + backward: {ms:.0f} ms, {3.5 * causal_flops / ms / 1e6:.1f} GFLOP/s")
    # The same kernel on bf16 tensors (a bf16 model attending in bf16, as PyTorch's side of `--bf16`
    # does; moram's bf16 models attend in f32 on CPUs).
    qb, kb, vb = (t.to(torch.bfloat16).requires_grad_(True) for t in (q, k, v))

    def forward_bf16():
        with torch.no_grad():
            return F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True)

    def both_bf16():
        F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True).sum().backward()

    ms = best_ms(forward_bf16, 3)
    print(f"flash attention forward, bf16: {ms:.0f} ms, {causal_flops / ms / 1e6:.1f} GFLOP/s")
    ms = best_ms(both_bf16, 3)
    print(f"flash attention forward + backward, bf16: {ms:.0f} ms, {3.5 * causal_flops / ms / 1e6:.1f} GFLOP/s")


def projections():
    shapes = {"q/o": (576, 576), "k/v": (192, 576), "gate/up": (1536, 576), "down": (576, 1536)}
    for rows in (2080, 4096):
        x, xd = torch.randn(rows, 576), torch.randn(rows, 1536)
        for name, (out, inp) in shapes.items():
            w = torch.randn(out, inp)
            ms = best_ms(lambda: F.linear(xd if inp == 1536 else x, w), 5)
            print(f"{name} projection, {rows} rows: {2 * rows * out * inp / ms / 1e6:.1f} GFLOP/s")
        wq, wk, wv = torch.randn(576, 576), torch.randn(192, 576), torch.randn(192, 576)
        wqkv = torch.cat([wq, wk, wv])
        sep = best_ms(lambda: (F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)), 5)
        fused = best_ms(lambda: F.linear(x, wqkv), 5)
        print(f"q/k/v, {rows} rows: separate {sep:.1f} ms, fused {fused:.1f} ms")
        wg, wu = torch.randn(1536, 576), torch.randn(1536, 576)
        wgu = torch.cat([wg, wu])
        sep = best_ms(lambda: (F.linear(x, wg), F.linear(x, wu)), 5)
        fused = best_ms(lambda: F.linear(x, wgu), 5)
        print(f"gate/up, {rows} rows: separate {sep:.1f} ms, fused {fused:.1f} ms")


def decode_step():
    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
    weights = [torch.randn(o, i) for _ in range(30) for (o, i) in shapes] + [torch.randn(49152, 576)]

    def step(rows, swapped):
        xs = {576: torch.randn(rows, 576), 1536: torch.randn(rows, 1536)}
        for w in weights:
            x = xs[w.shape[1]]
            _ = (w @ x.t()).t().contiguous() if swapped else F.linear(x, w)

    for rows in (4, 8, 16, 32):
        usual, swapped = best_ms(lambda: step(rows, False), 3), best_ms(lambda: step(rows, True), 3)
        print(f"decoding step's products, {rows} rows, cold weights: {usual:.0f} ms (swapped {swapped:.0f} ms)")


def decode_attention():
    for rows, keys in ((16, 224), (4, 560), (1, 4100)):
        q, k, v = torch.randn(rows, HEADS, 1, D), torch.randn(rows, KV, keys, D), torch.randn(rows, KV, keys, D)
        valid = torch.ones(rows, keys, dtype=torch.bool)
        valid[:, :5] = False

        def kernel():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :], enable_gqa=True)

        def stacked():
            scores = torch.matmul(q.view(rows, KV, HEADS // KV, D), k.transpose(2, 3)) / math.sqrt(D)
            p = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), -1)
            return torch.matmul(p, v).view(rows, HEADS, 1, D)

        assert (kernel() - stacked()).abs().max().item() < 1e-5
        print(f"one-query attention, {rows} rows x {keys} keys: libtorch {best_ms(kernel, 50):.3f} ms, "
              f"stacked heads {best_ms(stacked, 50):.3f} ms")


def attention_ceiling():
    """What any attention kernel built from MKL products and a vectorised softmax could reach: one
    256-query x 512-key block of one head (libtorch's flash kernel's block sizes at this length),
    its two products alone, and with the block's softmax."""
    q, k, v, s = torch.randn(256, D), torch.randn(512, D), torch.randn(512, D), torch.randn(256, 512)
    qk = best_ms(lambda: q @ k.T, 50)
    pv = best_ms(lambda: s @ v, 50)
    soft = best_ms(lambda: torch.softmax(s, -1), 50)
    flops = 2 * 2 * 256 * 512 * D
    print(f"block products: QK^T {qk:.3f} ms, PV {pv:.3f} ms, softmax {soft:.3f} ms")
    print(f"block rate: products alone {flops / (qk + pv) / 1e6:.1f} GFLOP/s, "
          f"with the softmax {flops / (qk + pv + soft) / 1e6:.1f} GFLOP/s")
    for m, n in ((256, 512), (768, 512), (768, 2048)):
        a, b = torch.randn(m, D), torch.randn(n, D)
        ms = best_ms(lambda: a @ b.T, 20)
        print(f"QK^T product {m} x {n} x {D}: {2 * m * n * D / ms / 1e6:.1f} GFLOP/s")


SECTIONS = {"attention": attention, "attention_ceiling": attention_ceiling, "projections": projections,
            "decode_step": decode_step, "decode_attention": decode_attention}

if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name in sys.argv[1:] or SECTIONS:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r} ({', '.join(SECTIONS)})")
        SECTIONS[name]()
