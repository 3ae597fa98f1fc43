"""Shared timing for the PyTorch sides of `cargo xtask bench` (same method as `moram-bench`)."""
import json
import sys
import time


def timed(reps, fn):
    """Median wall and process CPU time in ms over `reps` calls, after warm-up (3 calls, or 1
    when one call takes longer than half a second)."""
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


def served(fn):
    """`--serve` (`cargo xtask bench train --pairs`): warm-up as `timed` does, then `{"ready": true}`;
    one timed call per `run` line on stdin, each answered with `{"wall_ms": .., "cpu_ms": ..}`,
    until `done` or the end of input. Returns the median wall and CPU ms of the served calls,
    summarised as `timed` does."""
    t = time.perf_counter()
    fn()
    if time.perf_counter() - t <= 0.5:
        fn()
        fn()
    print(json.dumps({"ready": True}), flush=True)
    wall, cpu = [], []
    for line in sys.stdin:
        command = line.strip()
        if command == "done":
            break
        if command != "run":
            raise SystemExit(f"unknown command {command!r} on stdin (`run` or `done`)")
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
        print(json.dumps({"wall_ms": wall[-1], "cpu_ms": cpu[-1]}), flush=True)
    if not wall:
        raise SystemExit("no `run` command arrived on stdin before its end")
    wall.sort()
    cpu.sort()
    return wall[len(wall) // 2], cpu[len(cpu) // 2]


def emit(case, t, **extra):
    """One JSON line per case, the format `cargo xtask bench` reads (`extra`: more fields, such as
    peak memory)."""
    row = {"case": case, "impl_name": "pytorch", "median_ms": t[0], "median_cpu_ms": t[1], **extra}
    print(json.dumps(row), flush=True)
