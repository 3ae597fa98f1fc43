#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench llm`: `transformers` loading the same GGUF (dequantised to
f32 by its GGUF loader): prefill of `--prompt-len` tokens as `generate` runs it (KV cache,
`logits_to_keep=1`), a forward of `--prompt-len` tokens with every position's logits, and greedy
generation of `--new-tokens` tokens after a 16-token prompt. Prints one JSON object per line,
like `moram-bench llm`."""
import argparse
import pathlib

import torch
from timing import emit, timed
from transformers import AutoModelForCausalLM


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
        emit(f"prefill_{args.prompt_len}", timed(args.reps, lambda: model(ids, use_cache=True, logits_to_keep=1)))
        emit(f"forward_{args.prompt_len}", timed(args.reps, lambda: model(ids, use_cache=True)))
        short = ids[:, :16]
        n = args.new_tokens

        def gen():
            out = model.generate(short, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
            assert out.shape[1] == 16 + n

        emit(f"greedy_{n}", timed(args.reps, gen))


if __name__ == "__main__":
    main()
