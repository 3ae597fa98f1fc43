"""Load test of `moram serve` on a real run: 16 concurrent clients (curl) send every evaluation
prompt a run stored for its last row, three rounds; prints how many answers equal the text the
run's evaluation generated, the time per round and the server's resident memory around each round.

    moram --threads 1 -q serve RUN --bind 127.0.0.1:18080 &
    python3 benchmarks/serve_load.py RUN TASK [TASK ...]
"""

import concurrent.futures
import json
import subprocess
import sys
import time


def main() -> None:
    run, tasks = sys.argv[1], sys.argv[2:]
    state = json.load(open(f"{run}/state.json"))
    last = len(state["matrix"]) - 1
    rows = [r for t in tasks for r in json.load(open(f"{run}/outputs/after-task{last}/{t}.json"))]
    pid = int(subprocess.run(["pgrep", "-f", f"serve {run}"], capture_output=True, text=True).stdout.split()[0])

    def rss() -> float:
        with open(f"/proc/{pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) / 1024

    def ask(i: int) -> str:
        body = json.dumps({"prompt": rows[i]["prompt"]})
        out = subprocess.run(
            ["curl", "-s", "-H", "Content-Type: application/json", "-d", body, "http://127.0.0.1:18080/v1/completions"],
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["choices"][0]["text"]

    for round_ in range(3):
        before, start = rss(), time.time()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            got = list(pool.map(ask, range(len(rows))))
        same = sum(g == r["generation"] for g, r in zip(got, rows))
        print(f"| {round_ + 1} | {same} of {len(rows)} | {time.time() - start:.1f} | {before:.0f} -> {rss():.0f} |")


if __name__ == "__main__":
    main()
