"""The noisy-preferences bandit experiment (docs/results/noisy_preferences.md, section (a)): the sweep of
posttrain.bandit over flip rates and seeds, its report and plot. Run from a checkout:

    python -m experiments.noisy_bandit --seeds 20 --out docs/results
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

import torch

from experiments.noisy_bandit_report import format_summary, write_report
from posttrain.bandit import PLOT_NAME, BanditConfig, rdpo_vs_n, run_sweep, summarize


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.noisy_bandit",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=BanditConfig.seeds,
                    help="number of seeds (default %(default)s)")
    ap.add_argument("--out", default="docs/results", help="folder for noisy_preferences.md and its plot")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny tensors: 1 is fastest)")
    ap.add_argument("--no-diagnostic", action="store_true",
                    help="skip the extra table of DPO and rDPO at the largest eps for growing n")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = BanditConfig(seeds=args.seeds)
    print(f"noisy bandit: {asdict(cfg)}", file=sys.stderr)
    t0 = time.perf_counter()
    rows = run_sweep(cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    print(format_summary(summarize(rows)))
    diagnostic = None
    if not args.no_diagnostic:
        t1 = time.perf_counter()
        diagnostic = rdpo_vs_n(cfg)
        print(f"diagnostic (rDPO vs n): {time.perf_counter() - t1:.1f} s", file=sys.stderr)
    path = write_report(rows, args.out, cfg=cfg, wall_s=wall, diagnostic=diagnostic)
    print(f"sweep wall time {wall:.1f} s; wrote {path} and {path.with_name(PLOT_NAME)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
