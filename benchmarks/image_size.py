"""What each image of deployments/Dockerfile installs, measured without Docker: the distributions of its install
(detops' own dependencies for `train`/`worker`; pyproject's `serve` group for `serve`) resolved through this
environment's metadata, and the bytes their installed files take here.

Run: python benchmarks/image_size.py
This environment's torch is PyPI's CUDA build, as the `train` image's: NVIDIA's runtime wheels and triton are
counted. The base image (python:3.11-slim) and apt packages are not. test_serve.py builds the serve install in a venv
of its own and serves from it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def closure(requirements: list[str]) -> set[str]:
    """Every distribution `requirements` install, by normalised name (their extras followed), from this environment's
    metadata; a requirement not installed here ends its branch."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        for wanted in ("", *requirement.extras):
            key = f"{name}[{wanted}]"
            if key in seen:
                continue
            seen.add(key)
            with contextlib.suppress(PackageNotFoundError):
                todo.extend((Requirement(r), wanted) for r in requires(name) or [])
    return {key.split("[")[0] for key in seen}


def installed_bytes(names: set[str]) -> tuple[int, int]:
    """(distributions found here, bytes of their installed files)."""
    from importlib.metadata import PackageNotFoundError, distribution

    found, total = 0, 0
    for name in names:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        found += 1
        for file in dist.files or []:
            with contextlib.suppress(OSError):
                total += Path(str(dist.locate_file(file))).stat().st_size
    return found, total


def main() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    targets = {"train / worker": closure(["detops"]),
               "serve": closure(project["dependency-groups"]["serve"]) | {"detops"}}
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), []) if Path("/proc/cpuinfo").is_file() else []
    print(f"python {sys.version.split()[0]}; cpu flags: "
          f"{' '.join(f for f in flags if f.startswith(('avx', 'amx', 'fma')))}")
    print(f"{'image':<16}{'distributions':>14}{'installed MB':>14}{'vs train':>10}")
    sizes = {target: installed_bytes(names) for target, names in targets.items()}
    base = sizes["train / worker"][1]
    for target, (count, size) in sizes.items():
        print(f"{target:<16}{count:>14}{size / 2**20:>14.0f}{size / base:>10.2f}")
    print("site-packages only: torch is PyPI's CUDA build (nvidia-* wheels, triton counted); base image not counted")


if __name__ == "__main__":
    main()
