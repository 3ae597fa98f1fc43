"""Shared timing for the PyTorch sides of `cargo xtask bench` (same method as `moram-bench`)."""
import json
import sys
import time


def timed(reps, fn):
    """Median wall and process CPU time in ms over `reps` calls, after `warm_up`."""
    warm_up(fn)
    return medians([timed_call(fn) for _ in range(reps)])


def served(fn):
    """`--serve` (`cargo xtask bench train --pairs`): `warm_up`, then `{"ready": true}`; one timed
    call per `run` line on stdin, each answered with `{"wall_ms": .., "cpu_ms": ..}`, until `done`
    or the end of input. Returns the median wall and CPU ms of the served calls."""
    warm_up(fn)
    print(json.dumps({"ready": True}), flush=True)
    calls = []
    for line in sys.stdin:
        command = line.strip()
        if command == "done":
            break
        if command != "run":
            raise SystemExit(f"unknown command {command!r} on stdin (`run` or `done`)")
        calls.append(timed_call(fn))
        print(json.dumps({"wall_ms": calls[-1][0], "cpu_ms": calls[-1][1]}), flush=True)
    if not calls:
        raise SystemExit("no `run` command arrived on stdin before its end")
    return medians(calls)


def warm_up(fn):
    """One call, and two more when it took at most half a second (as `moram-bench` does)."""
    t = time.perf_counter()
    fn()
    if time.perf_counter() - t <= 0.5:
        fn()
        fn()


def timed_call(fn):
    """Wall and process CPU ms of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t) * 1e3, (time.process_time() - c) * 1e3


def medians(calls):
    """Upper medians of the calls' wall and CPU ms (as `moram-bench` summarises)."""
    wall, cpu = sorted(w for w, _ in calls), sorted(c for _, c in calls)
    return wall[len(wall) // 2], cpu[len(cpu) // 2]


def emit(case, t, **extra):
    """One JSON line per case, the format `cargo xtask bench` reads (`extra`: more fields, such as
    peak memory)."""
    row = {"case": case, "impl_name": "pytorch", "median_ms": t[0], "median_cpu_ms": t[1], **extra}
    print(json.dumps(row), flush=True)
