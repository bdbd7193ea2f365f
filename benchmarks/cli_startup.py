"""Benchmark: how long `detops --help` and `detops status` take, and which heavy libraries `import detops.cli`
pulls in.

Times the venv's `detops` entry point (median of N subprocess runs) against `python -c pass` and
`python -c "import mlflow"` (what `detops status` avoids), so the ratio stays meaningful on a noisy machine;
`detops status --json` runs in `--workspace` (default: the current folder; after `make demo` it has a registry,
reports and a landing folder), with no server to ask. Then reads `python -X importtime -c "import detops.cli"` for
the slowest imports and any heavy library (there should be none: steps import those lazily).

    .venv/bin/python benchmarks/cli_startup.py [--runs 10] [--workspace PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from serve_load import cpu_table, machine_line  # the machine and its CPU flags, as the other benchmarks print them

HEAVY = ("torch", "mlflow", "prefect", "great_expectations", "evidently")


def median_seconds(command: list[str], runs: int, cwd: Path | None = None,
                   env: dict[str, str] | None = None) -> float:
    subprocess.run(command, capture_output=True, check=True, cwd=cwd, env=env)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd=cwd, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_times(module: str) -> list[tuple[str, int, int]]:
    """(module, nesting depth, cumulative microseconds) for what `import module` loads after start-up."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
    )
    rows: list[tuple[str, int, int]] = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        name = name[1:]  # one separator space, then two spaces per nesting level
        stripped = name.lstrip()
        if stripped == "site":  # everything before it is interpreter start-up, not our import
            rows.clear()
            continue
        rows.append((stripped, (len(name) - len(stripped)) // 2, int(cumulative)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workspace", type=Path, default=Path.cwd(), help="where `detops status` runs")
    args = parser.parse_args()

    detops = str(Path(sys.executable).with_name("detops"))
    baseline = median_seconds([sys.executable, "-c", "pass"], args.runs)
    print(f"## CLI start-up (median of {args.runs} runs)\n")
    print("| command | median s | x `python -c pass` |")
    print("| --- | ---: | ---: |")
    print(f"| `python -c pass` | {baseline:.3f} | 1.0 |")
    for command in (["--help"], ["train", "--help"]):
        seconds = median_seconds([detops, *command], args.runs)
        print(f"| `detops {' '.join(command)}` | {seconds:.3f} | {seconds / baseline:.1f} |")
    mlflow = median_seconds([sys.executable, "-c", "import mlflow"], args.runs)
    print(f"| `python -c \"import mlflow\"` | {mlflow:.3f} | {mlflow / baseline:.1f} |")
    env_free = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    status = median_seconds([detops, "status", "--json"], args.runs, args.workspace, env_free)
    print(f"| `detops status --json` (no server) | {status:.3f} | {status / baseline:.1f} |")

    rows = import_times("detops.cli")
    loaded = {name.split(".")[0] for name, _, _ in rows}
    total = next(us for name, _, us in rows if name == "detops.cli")
    direct = sorted(((name, us) for name, depth, us in rows if depth == 1), key=lambda row: -row[1])
    print("\n## `import detops.cli`\n")
    print("| item | value |")
    print("| --- | --- |")
    print(f"| cumulative import time | {total / 1000:.0f} ms |")
    print(f"| modules loaded | {len(rows)} |")
    print(f"| heavy libraries loaded ({', '.join(HEAVY)}) | {', '.join(h for h in HEAVY if h in loaded) or 'none'} |")
    print(f"| slowest direct imports | {', '.join(f'{name} {us / 1000:.0f} ms' for name, us in direct[:5])} |")
    print(f"\n{cpu_table()}\n{machine_line()}")


if __name__ == "__main__":
    main()
