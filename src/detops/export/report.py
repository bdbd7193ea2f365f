"""The comparison people look at: a table (json for DVC metrics, markdown, the terminal) and a scatter of
latency against mAP, one point per variant."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from detops.atomic import atomic_path, write_json, write_text
from detops.export.gate import Variant


def machine() -> str:
    """`Intel Xeon ... (2 cores)`, plus the GPU when there is one: latency means nothing without it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from detops.inference.tensorrt import current_target

    gpu = current_target().gpu
    return f"{cpu} ({os.cpu_count()} cores)" + (f", {gpu}" if gpu else "")


# The /proc/cpuinfo flags that decide which CPU kernels run (and so which variant is fastest).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_int8", "amx_bf16")


def cpu_info(openvino_capabilities: tuple[str, ...]) -> dict[str, list[str]]:
    """The CPU's kernel-deciding flags and, where OpenVINO was asked (`export.openvino.plan`), its
    OPTIMIZATION_CAPABILITIES: a latency ranking holds only where these match (an `openvino-bf16` variant needs
    BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        text = ""
    first = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    present = set(first.partition(":")[2].split())
    out = {"flags": [flag for flag in KERNEL_FLAGS if flag in present]}
    if openvino_capabilities:
        out["openvino_capabilities"] = list(openvino_capabilities)
    return out


def cpu_line(cpu: dict[str, list[str]]) -> str:
    line = f"CPU flags: {', '.join(cpu['flags']) or 'none of ' + ', '.join(KERNEL_FLAGS)}"
    if "openvino_capabilities" in cpu:
        line += f"; OpenVINO capabilities: {', '.join(cpu['openvino_capabilities'])}"
    return line


def report_dict(variants: list[Variant], deploy: dict[str, str | None], context: dict[str, Any]) -> dict[str, Any]:
    return {**context, "deployable": deploy, "variants": {v.name: v.to_dict() for v in variants}}


def _ms(latency: dict[str, float | int] | None, key: str) -> str:
    return "-" if latency is None else f"{float(latency[key]):.2f}"


def rows(variants: list[Variant], metric: str) -> list[list[str]]:
    out = []
    for v in variants:
        lat = v.latency
        verdict = "baseline" if v.reason == "baseline" else ("accepted" if v.accepted else "REJECTED")
        map50 = v.metrics.get(metric.replace("/map", "/map_50"))
        out.append([
            v.name, v.precision, v.runtime, f"{v.size_mb:.2f}",
            f"{v.metrics.get(metric) or 0:.4f}", f"{map50 or 0:.4f}", "-" if v.drop is None else f"{v.drop:+.4f}",
            _ms(lat, "e2e_p50_ms"), _ms(lat, "e2e_p95_ms"), _ms(lat, "graph_p50_ms"), _ms(lat, "graph_p95_ms"),
            "-" if lat is None else f"{float(lat['throughput_ips']):.1f} @{lat['throughput_batch']}",
            v.timed_on or "-", verdict,
        ])
    return out


HEADER = ["variant", "precision", "runtime", "MB", "mAP", "mAP@0.5", "drop", "e2e p50 ms", "e2e p95 ms",
          "graph p50 ms", "graph p95 ms", "img/s @batch", "timed on", "verdict"]


def markdown(variants: list[Variant], deploy: dict[str, str | None], context: dict[str, Any]) -> str:
    metric = context["metric"]
    lines = [f"### detops export ({context['machine']}, {context['threads']} threads)", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(variants, metric)]
    ranked = f" (fastest accepted by {context['ranked_by']})" if "ranked_by" in context else ""
    lines += ["", f"Deployable: CPU **{deploy.get('cpu')}**, GPU **{deploy.get('gpu')}**{ranked}. Gate: {metric} "
              f"drop ≤ {context['max_map_drop']:g} against the checkpoint scored through the same predictor."]
    lines += [cpu_line(context["cpu"])] if "cpu" in context else []
    lines += [f"- {v.name}: {v.reason}" for v in variants if v.reason and v.reason != "baseline"]
    lines += [f"- {note}" for note in context.get("notes", [])]
    return "\n".join(lines) + "\n"


TERMINAL = ("variant", "mAP", "drop", "e2e p50 ms", "graph p50 ms", "img/s @batch", "verdict")  # fits 80 columns;
# the markdown report has every column


def rich_table(variants: list[Variant], metric: str, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    keep = [HEADER.index(name) for name in TERMINAL]
    for name in TERMINAL:
        table.add_column(name, justify="left" if name in ("variant", "precision", "verdict") else "right")
    for row in rows(variants, metric):
        table.add_row(*(row[i] for i in keep), style="red" if row[-1] == "REJECTED" else None)
    return table


def scatter(variants: list[Variant], metric: str, path: Path, title: str) -> None:
    """Latency (end to end, batch 1) against mAP: the trade-off at a glance; rejected points in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for v in variants:
        if v.latency is None or v.metrics.get(metric) is None:
            continue
        colour = "tab:blue" if v.accepted else "tab:red"
        x, y = float(v.latency["e2e_p50_ms"]), float(v.metrics[metric] or 0)
        ax.scatter([x], [y], color=colour, s=40)
        ax.annotate(f"{v.name} ({v.timed_on})", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("end-to-end latency, batch 1, p50 (ms)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_reports(variants: list[Variant], deploy: dict[str, str | None], context: dict[str, Any],
                  files: dict[str, Path]) -> None:
    scatter(variants, context["metric"], files["plot"], f"detops export: {context['machine']}")
    write_text(files["markdown"], markdown(variants, deploy, context))
    write_json(files["report"], report_dict(variants, deploy, context))
