"""The accuracy gate: every exported variant is scored like the checkpoint and must stay within
`export.max_map_drop` of it; the fastest accepted variant per target (per image, at the served batch) is the
one to deploy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One artifact as measured: its scores, speed and verdict."""

    name: str  # torch | onnx-fp32 | onnx-fp16 | onnx-int8 | onnx-int8-trt | openvino-* | tensorrt-fp16 | tensorrt-int8
    file: str
    precision: str
    runtime: str
    target: str  # cpu | gpu: where the artifact is meant to be deployed
    size_mb: float
    metrics: dict[str, float | None]
    latency: dict[str, float | int] | None  # None: not timed on its target here (a GPU file on a CPU)
    timed_on: str = ""
    drop: float | None = None
    accepted: bool | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def apply_gate(baseline: Variant, variants: list[Variant], metric: str, max_drop: float) -> list[Variant]:
    """Each variant with its drop in `metric` against the baseline and accepted iff drop <= max_drop."""
    base = baseline.metrics.get(metric)
    if base is None:
        raise ValueError(f"the baseline has no {metric!r}; cannot gate")
    out = [replace(baseline, drop=0.0, accepted=True, reason="baseline")]
    for variant in variants:
        value = variant.metrics.get(metric)
        if value is None:
            out.append(replace(variant, accepted=False, reason=f"no {metric}"))
            continue
        drop = round(base - value, 6)
        ok = drop <= max_drop
        reason = (f"{metric} {value:.4f}, {drop:+.4f} below the checkpoint's {base:.4f}"
                  f" ({'within' if ok else 'over'} the {max_drop:g} allowed)")
        out.append(replace(variant, drop=drop, accepted=ok, reason=reason))
    return out


# Untimed fallback for a target (a GPU artifact on a CPU-only machine): engines first, then FP16.
PREFERENCE = ("tensorrt-int8", "tensorrt-fp16", "onnx-fp16", "onnx-int8-trt", "onnx-int8", "onnx-fp32", "torch")


def ranking(variants: list[Variant], target: str) -> list[str]:
    """The accepted variants for `target` timed on it, fastest first: milliseconds per image at the served batch
    (the largest benchmarked), ties broken by the batch-1 latency."""
    timed = [v for v in variants if v.accepted and v.target == target and v.latency is not None
             and v.timed_on == target]
    return [v.name for v in sorted(timed, key=_served_cost)]


def _served_cost(v: Variant) -> tuple[float, float]:
    assert v.latency is not None
    return 1000.0 / float(v.latency["throughput_ips"]), float(v.latency["e2e_p50_ms"])


def deployable(variants: list[Variant]) -> dict[str, str | None]:
    """Per target, the first of its `ranking`; where nothing was timed on the target (no GPU here), the first
    accepted one in `PREFERENCE`."""
    out: dict[str, str | None] = {}
    for target in ("cpu", "gpu"):
        ranked = ranking(variants, target)
        if ranked:
            out[target] = ranked[0]
        else:
            accepted = [v for v in variants if v.accepted and v.target == target]
            preferred = sorted(accepted, key=lambda v: PREFERENCE.index(v.name) if v.name in PREFERENCE else 99)
            out[target] = preferred[0].name if preferred else None
    return out
