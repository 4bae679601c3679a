"""P7: peak memory (RSS) of `evalkit run` at 300 vs 3,000 prompts (target: flat within 10 %).

Each run is a fresh subprocess (`evalkit run --prior eclipse --suite synth-color --split train --limit N
--images-per-prompt 1 --no-cache`, train prompts since val has 300); its peak RSS is read from the kernel
(`os.wait4` reports its peak resident set when it exits). Images are written chunk by chunk and never kept;
only the small per-image rows grow with N:

    python -m evalkit.bootstrap python benchmarks/speed/memory.py [--small 300 --large 3000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def peak_rss_mb(limit: int, out: str, threads: int) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "evalkit",
        "run",
        "--prior",
        "eclipse",
        "--suite",
        "synth-color",
        "--split",
        "train",
        "--limit",
        str(limit),
        "--images-per-prompt",
        "1",
        "--no-cache",
        "--out",
        out,
    ]
    start = time.perf_counter()
    pid = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"run with --limit {limit} failed (status {status})")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, t_small = peak_rss_mb(args.small, tmp, args.threads)
        large, t_large = peak_rss_mb(args.large, tmp, args.threads)
    print(
        f"peak RSS: {args.small} prompts {small:.0f} MB ({t_small:.0f} s), {args.large} prompts {large:.0f} MB "
        f"({t_large:.0f} s): {100 * (large - small) / small:+.1f} %"
    )


if __name__ == "__main__":
    main()
