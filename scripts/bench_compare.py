"""``make bench-compare``: Ray's microbenchmark and ours, back to back, side by side.

Installs Ray (``RAY_VERSION``, 2.60.0 by default) into a virtual environment of
its own (``.venv-ray``, made once), runs ``ray microbenchmark`` there, then
``runtime microbenchmark`` in the project's, and prints every row the two
share with the ratio ours / Ray's; then ``single client put gigabytes``
against this machine's memcpy rate (numpy copying an array of the same size).
Timings stay out of the tests: this prints, it asserts nothing.

Usage: python scripts/bench_compare.py [--ray-venv DIR] [--duration S] [--skip-ray FILE]
(``--skip-ray FILE`` reads Ray's rows from a saved output instead of running it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROW = re.compile(r"^(?P<name>.+?) per second (?P<mean>[0-9.]+) \+- (?P<std>[0-9.]+)")
RAY_VERSION = os.environ.get("RAY_VERSION", "2.60.0")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ray_python(venv: str) -> str:
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print(f"making {venv} with ray=={RAY_VERSION} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", f"ray[default]=={RAY_VERSION}", "numpy"],
            check=True,
        )
    return python


def parse(text: str) -> dict[str, float]:
    rows = {}
    for line in text.splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match["name"].strip()] = float(match["mean"])
    return rows


def run_ray(python: str) -> str:
    ray = os.path.join(os.path.dirname(python), "ray")
    print("running ray microbenchmark ...", flush=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([ray, "microbenchmark"], capture_output=True, text=True, env=env)
    subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        # Its last rows (Ray Client's) start a client server, which can time
        # out on a loaded machine: the rows printed before still compare.
        rows = parse(text)
        if not rows:
            raise SystemExit(f"ray microbenchmark failed:\n{done.stderr[-3000:]}")
        last = done.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"ray microbenchmark failed after {len(rows)} rows ({last[0]}); "
              "comparing those", flush=True)  # fmt: skip
    return text


def run_ours(duration: float) -> dict[str, float]:
    print("running runtime microbenchmark ...", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "rows.json")
        subprocess.run(
            [sys.executable, "-m", "runtime.cli", "microbenchmark", "--duration", str(duration),
             "--json", out],
            check=True,
            cwd=ROOT,
        )  # fmt: skip
        with open(out) as f:
            return {row["name"]: float(row["mean"]) for row in json.load(f)}


def memcpy_gigabytes() -> float:
    """GB per second numpy copies an array of the put row's size (this machine's memcpy)."""
    import numpy as np

    source = np.ones(1024 * 1024 * 1024 // 8, dtype=np.float64)  # 1 GiB, as Ray's row
    target = np.empty_like(source)
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        rates.append(source.nbytes / 1e9 / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-venv", default=os.path.join(ROOT, ".venv-ray"))
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per row (ours)")
    parser.add_argument("--skip-ray", default=None, help="Ray's saved output, not a new run")
    args = parser.parse_args()
    if args.skip_ray:
        with open(args.skip_ray) as f:
            ray_text = f.read()
    else:
        ray_text = run_ray(ray_python(args.ray_venv))
        saved = os.path.join(args.ray_venv, "last_ray_microbenchmark.txt")
        with open(saved, "w") as f:
            f.write(ray_text)
        print(f"Ray's output is in {saved} (--skip-ray reuses it)", flush=True)
    ray_rows = parse(ray_text)
    ours = run_ours(args.duration)
    shared = [name for name in ray_rows if name in ours]
    width = max((len(n) for n in shared), default=10)
    print(f"\n{'row':<{width}}  {'ours':>12}  {'Ray ' + RAY_VERSION:>12}  ours/Ray")
    for name in shared:
        ratio = ours[name] / ray_rows[name] if ray_rows[name] else float("inf")
        print(f"{name:<{width}}  {ours[name]:>12.2f}  {ray_rows[name]:>12.2f}  {ratio:>7.2f}x")
    missing = [name for name in ray_rows if name not in ours]
    if missing:
        print(f"\nRay's rows we do not run: {', '.join(missing)}")
    put = "single client put gigabytes"
    if put in ours:
        memcpy = memcpy_gigabytes()
        share = ours[put] / memcpy
        print(f"\n{put}: {ours[put]:.2f} GB/s, {share:.0%} of this machine's memcpy ({memcpy:.2f})")


if __name__ == "__main__":
    main()
