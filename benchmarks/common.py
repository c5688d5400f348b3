"""What the throughput benchmarks share: the machine, memory readings, and running one side in its own
process (so each peak RSS is its own)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time


def machine() -> str:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cpus ({cpu})"


def peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def minor_faults() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def spawn(script: str, args: list[str], threads: int, env: list[str]) -> dict:
    """Run `script --worker ARGS` in a fresh process and return the dict it printed as `RESULT {...}`
    (with `process_s`), or {"error": ...}."""
    cmd = [sys.executable, os.path.abspath(script), "--worker", *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                **dict(kv.split("=", 1) for kv in env)}
    t = time.perf_counter()
    p = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-6000:])
        return {"error": f"exit {p.returncode}: {p.stderr.strip()[-300:]}"}
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_s"] = round(time.perf_counter() - t, 1)
    return out


def step_summary(ends: list[float], faults: list[int], items: int, tokens: int) -> dict:
    """`ends`: the end time of the warm-up step, then of each timed step; `faults`: the minor page-fault
    count at the same moments."""
    import statistics
    steps = [b - e for e, b in zip(ends, ends[1:])]
    dt = ends[-1] - ends[0]
    return {"s_per_step": round(dt / len(steps), 3), "median_step_s": round(statistics.median(steps), 3),
            "items_per_s": round(items / dt, 3), "tokens_per_s": round(tokens / dt, 1),
            "step_s": [round(x, 2) for x in steps],
            "step_minor_faults": [b - e for e, b in zip(faults, faults[1:])]}
