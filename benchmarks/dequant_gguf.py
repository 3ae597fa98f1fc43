#!/usr/bin/env python3
"""Reference side of `cargo xtask bench dequant`: the `gguf` Python package (numpy, the reference
the dequantisation tests check against) dequantising every tensor of a GGUF file, grouped by
storage type, plus the whole file. Prints one JSON object per line, like `moram-bench dequant`
(the `pytorch` key marks the reference side in the shared format)."""
import argparse
from collections import defaultdict

import gguf
from gguf import quants
from timing import emit, timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gguf", required=True)
    args = ap.parse_args()
    reader = gguf.GGUFReader(args.gguf)
    by_type = defaultdict(list)
    for t in reader.tensors:
        by_type[t.tensor_type.name].append(t)

    def run(tensors):
        for t in tensors:
            quants.dequantize(t.data, t.tensor_type)

    for name, tensors in sorted(by_type.items()):
        emit(f"type_{name}", timed(args.reps, lambda ts=tensors: run(ts)))
    emit("whole_file", timed(args.reps, lambda: run(reader.tensors)))


if __name__ == "__main__":
    main()
