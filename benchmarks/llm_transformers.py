#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench llm`: `transformers` loading the same GGUF (dequantised to
f32 by its GGUF loader): prefill of `--prompt-len` tokens, and greedy generation of
`--new-tokens` tokens after a 16-token prompt. Prints one JSON object per line, like
`moram-bench llm`."""
import argparse
import json
import pathlib
import time

import torch
from transformers import AutoModelForCausalLM


def timed(reps, fn):
    t = time.perf_counter()
    fn()
    if time.perf_counter() - t <= 0.5:
        fn()
        fn()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    wall.sort()
    cpu.sort()
    return wall[reps // 2], cpu[reps // 2]


def emit(case, t):
    print(json.dumps({"case": case, "impl_name": "pytorch", "median_ms": t[0], "median_cpu_ms": t[1]}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    path = pathlib.Path(args.gguf)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32).eval()
    ids = torch.tensor([[300 + (i * 37) % 5000 for i in range(args.prompt_len)]])
    with torch.no_grad():
        emit(f"prefill_{args.prompt_len}", timed(args.reps, lambda: model(ids, use_cache=True)))
        short = ids[:, :16]
        n = args.new_tokens

        def gen():
            out = model.generate(short, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
            assert out.shape[1] == 16 + n

        emit(f"greedy_{n}", timed(args.reps, gen))


if __name__ == "__main__":
    main()
