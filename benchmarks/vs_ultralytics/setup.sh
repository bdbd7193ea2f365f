#!/usr/bin/env bash
# Build benchmarks/.venv-ultralytics: Ultralytics (AGPL) lives ONLY here, never in the project's deps.
# torch, torchvision, numpy, opencv, ... come from the project venv through a .pth file, so nothing
# big is downloaded twice; only Ultralytics and its small missing deps are installed (no deps resolved
# by pip, so it can never pull a second torch).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
project_venv="$repo/.venv"
venv="$repo/benchmarks/.venv-ultralytics"

[ -x "$project_venv/bin/python" ] || { echo "setup.sh: $project_venv not found; install the project first." >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$project_venv/bin/python" -m venv "$venv"

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
project_site="$("$project_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir (not a bare path line) so the project venv's own .pth files run too: the editable
# install of detops is one. Added after the venv's site-packages: its packages win, the project's fill in.
echo "import site; site.addsitedir('$project_site')" > "$site/_detops_project_venv.pth"

# Ultralytics' requirements that the project venv lacks (the rest — torch, torchvision, numpy,
# opencv-python-headless for cv2, pillow, pyyaml, requests, psutil, matplotlib, httpx — it has).
# Pinned: the versions this benchmark was run with.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    ultralytics==8.4.190 ultralytics-thop==2.2.3 ultralytics-platform==0.1.99 \
    polars==2.1.0 polars-runtime-32==2.1.0 py-cpuinfo==9.0.0 nvidia-ml-py==13.615.71
YOLO_CONFIG_DIR="$repo/benchmarks/runs/ultralytics-config" YOLO_OFFLINE=1 \
    "$venv/bin/python" -c 'import ultralytics, detops; print("ultralytics", ultralytics.__version__, "ready in", "'"$venv"'")'
