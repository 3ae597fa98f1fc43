#!/usr/bin/env python3
"""A/B of two serving benchmark processes (`moram-bench train ... --serve` or
`train_pytorch.py ... --serve`), the paired design of `cargo xtask bench train --pairs` for any
two commands: both start and warm up, then their timed calls alternate one by one (A first in odd
pairs). Prints each pair's CPU ms and ratio A/B, and the geometric mean of the ratios with a 95%
t-interval (the quantile from a small table, as the xtask's).

    python3 benchmarks/ab_serve.py PAIRS 'COMMAND A' 'COMMAND B' [--env-a K=V ...] [--env-b K=V ...]

Standard library only; the commands run with this process's environment plus their `--env-*`.
"""
import argparse
import json
import math
import os
import shlex
import subprocess

T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def start(command, env_pairs):
    env = dict(os.environ)
    for kv in env_pairs:
        key, _, value = kv.partition("=")
        env[key] = value
    p = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline()
    if not line or not json.loads(line).get("ready"):
        raise SystemExit(f"{command!r} did not answer ready (printed {line!r})")
    return p


def call(p):
    p.stdin.write("run\n")
    p.stdin.flush()
    line = p.stdout.readline()
    if not line:
        raise SystemExit("a side ended before answering")
    return json.loads(line)["cpu_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", type=int)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--env-a", nargs="*", default=[])
    ap.add_argument("--env-b", nargs="*", default=[])
    args = ap.parse_args()
    if args.pairs < 2:
        raise SystemExit("at least 2 pairs (an interval needs two)")
    a, b = start(args.a, args.env_a), start(args.b, args.env_b)
    ratios = []
    for i in range(args.pairs):
        if i % 2 == 0:
            ta = call(a)
            tb = call(b)
        else:
            tb = call(b)
            ta = call(a)
        ratios.append(ta / tb)
        print(f"pair {i + 1}: A {ta:.0f} ms, B {tb:.0f} ms (CPU), A/B {ta / tb:.3f}", flush=True)
    for p in (a, b):
        p.stdin.write("done\n")
        p.stdin.flush()
        p.wait()
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    half = t * sd / math.sqrt(n)
    print(f"A/B geometric mean {math.exp(mean):.3f} [95% CI {math.exp(mean - half):.3f}, {math.exp(mean + half):.3f}]")


if __name__ == "__main__":
    main()
