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


def gemm_flops_per_s(device: str = "cpu", dtype: str = "float32", n: int | None = None,
                     reps: int = 3) -> float:
    """The machine's matmul ceiling here and now: the best of `reps` timed n x n x n products (after one
    warm-up) in FLOP/s, with the calling process's torch threads. Measured in the same run as the training
    it divides, because the rate moves with clocks, neighbours and thread count."""
    import torch
    dt = getattr(torch, dtype)
    n = n or (8192 if device == "cuda" else 2048)
    x, y = (torch.randn(n, n, device=device).to(dt) for _ in range(2))
    best = float("inf")
    for i in range(reps + 1):
        sync(device)
        t = time.perf_counter()
        torch.mm(x, y)
        sync(device)
        if i:  # the first product is the warm-up
            best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def param_counts(model) -> tuple[int, int]:
    """(non-embedding parameters, LM-head parameters) of a causal LM, counted once even when the head is
    tied to the input embedding (the lookup costs no FLOPs; the head's product does). Count before adding
    adapters: the benchmarks' LoRA FLOPs are the base model's."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    return total - emb.numel() - (head.numel() if head is not emb else 0), head.numel()


def train_flops(counts: tuple[int, int], tokens: int, head_positions: int, passes: int = 6) -> float:
    """Model FLOPs of a forward+backward (passes=6) or a forward (passes=2): passes x non-embedding params x
    tokens the model processed, plus the LM head on the positions it runs (issue 21's count; attention's
    score products are not counted)."""
    body, head = counts
    return passes * (body * tokens + head * head_positions)


def fixed_length_text(tok, n: int, rng) -> str:
    """Text of exactly n tokens for the tokenizer: n words drawn from its vocabulary that each encode to one
    token with a leading space (words split at spaces, so the count holds when they are joined)."""
    words = getattr(tok, "_bench_words", None)
    if words is None:
        words = []
        for i in range(min(len(tok), 20000)):
            w = tok.decode([i])
            if w.startswith(" ") and w[1:].isalpha() and tok.encode(w, add_special_tokens=False) == [i]:
                words.append(w)
        tok._bench_words = words
    text = "".join(words[j] for j in rng.integers(0, len(words), n))
    assert len(tok.encode(text, add_special_tokens=False)) == n, "fixed-length text does not round-trip"
    return text


def add_model_args(ap, default_model: str) -> None:
    """The options both training benchmarks share: which model, where, in what precision, on what data, and
    whether to time the matmul ceiling."""
    ap.add_argument("--model", default=default_model,
                    help="a posttrain model name (random-llama-0.5b, -1.2b on a GPU)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16 = autocast on both sides (TRL bf16=True, posttrain train.precision bf16)")
    ap.add_argument("--lengths", type=lambda v: tuple(int(x) for x in v.split(",")), default=None,
                    metavar="PROMPT,COMPLETION",
                    help="fixed-length random-word data of these token counts instead of word problems")
    ap.add_argument("--ceiling", action="store_true",
                    help="time a large matmul before and after the workers and report MFU against it")


def model_args(a) -> list[str]:
    """add_model_args' options as a worker's command line (--ceiling stays with the driver)."""
    return ["--model", a.model, "--device", a.device, "--precision", a.precision] + (
        ["--lengths", ",".join(map(str, a.lengths))] if a.lengths else [])


def measure_ceiling(a, readings: list[float]) -> None:
    """Append this moment's matmul ceiling for the run's device, precision and threads, and print it."""
    import torch
    torch.set_num_threads(a.threads)
    readings.append(gemm_flops_per_s(a.device, "bfloat16" if a.precision == "bf16" else "float32"))
    print(json.dumps({"gemm_flops_per_s": round(readings[-1])}), flush=True)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timestamp ends a step (a no-op on CPU)."""
    if device == "cuda":
        import torch
        torch.cuda.synchronize()
