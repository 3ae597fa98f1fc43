"""Shared timing for the PyTorch sides of `cargo xtask bench` (same method as `moram-bench`)."""
import json
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


def emit(case, t, **extra):
    """One JSON line per case, the format `cargo xtask bench` reads (`extra`: more fields, such as
    peak memory)."""
    row = {"case": case, "impl_name": "pytorch", "median_ms": t[0], "median_cpu_ms": t[1], **extra}
    print(json.dumps(row), flush=True)
