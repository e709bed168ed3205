"""Run every benchmark, each in its own process, then build ``bench/RESULTS.md``.

    python bench/run_all.py                  # full runs (what `make bench` does): hours on a CPU
    python bench/run_all.py --quick          # smoke run of each script (`--quick` passed through)
    python bench/run_all.py --only speed_peers train_throughput
    python bench/run_all.py --skip losses

Each script is also runnable alone (``python bench/<name>.py [--quick]``) and writes
``bench/results/<name>.json``; quality benchmarks are picked up as ``bench/quality_*.py`` and must
accept ``--quick`` too. A failing script does not stop the others: its exit status is reported
at the end and this command exits non-zero. The report is rebuilt from whatever results exist.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
#: The speed benchmarks, cheapest first; quality_*.py scripts are found on disk and run after them.
SPEED_SCRIPTS = ("losses", "speed_peers", "augment", "train_throughput")


def scripts() -> list[str]:
    quality = sorted(path.stem for path in BENCH.glob("quality_*.py"))
    return [*SPEED_SCRIPTS, *quality]


def run(name: str, quick: bool) -> tuple[int, float]:
    command = [sys.executable, str(BENCH / f"{name}.py"), *(["--quick"] if quick else [])]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    returncode = subprocess.run(command, cwd=ROOT).returncode
    return returncode, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script (smoke run)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these scripts")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="leave these scripts out")
    parser.add_argument("--no-report", action="store_true", help="do not rebuild bench/RESULTS.md")
    args = parser.parse_args(argv)

    available = scripts()
    unknown = sorted((set(args.only or []) | set(args.skip)) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
    chosen = [name for name in (args.only or available) if name not in args.skip]
    outcomes = {name: run(name, args.quick) for name in chosen}

    print("\n=== summary")
    for name, (returncode, seconds) in outcomes.items():
        print(f"{name:<20} {'ok' if returncode == 0 else f'FAILED (exit {returncode})':<18} {seconds / 60:6.1f} min")
    if not args.no_report:
        report = subprocess.run([sys.executable, str(BENCH / "report.py")], cwd=ROOT)
        if report.returncode != 0:
            print("bench/report.py failed: RESULTS.md was not rebuilt")
            return 1
    return 0 if all(returncode == 0 for returncode, _ in outcomes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
