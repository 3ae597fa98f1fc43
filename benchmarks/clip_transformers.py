#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench clip`: transformers' CLIPVisionModel (ViT-B/16 shapes, random
weights, eval, no grad) on a batch of 8 images. Prints one JSON object per line, like
`moram-bench clip`. (moram's encoder also applies the visual projection, a 768 x 512 matmul per
image, so it does slightly more work.)"""
import argparse

import torch
from timing import emit, timed
from transformers import CLIPVisionConfig, CLIPVisionModel




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=224, patch_size=16, hidden_act="quick_gelu")
    model = CLIPVisionModel(config).eval()
    pixels = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        t = timed(args.reps, lambda: model(pixel_values=pixels))
    emit(f"clip_image_b{args.batch}", t)


if __name__ == "__main__":
    main()
