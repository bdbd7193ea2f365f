"""OpenVINO variants: which ones this machine offers, and their files (`*.openvino.onnx`).

Each variant is an exported ONNX graph, unchanged, whose detops metadata names the OpenVINO precision hint it
is compiled with (`detops.inference.openvino_runtime`): `openvino-int8` runs the INT8 QDQ file (u8/s8, decode
tail float32) with the f32 hint, `openvino-fp32` the FP32 file with the f32 hint, and `openvino-bf16` the FP32
file with the bf16 hint, offered only where OpenVINO reports BF16 among the CPU's `OPTIMIZATION_CAPABILITIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from detops.errors import ExportError
from detops.export.graph import set_metadata
from detops.export.variants import FP32, INT8, VariantFile
from detops.inference.meta import METADATA_KEY, ModelMeta
from detops.inference.openvino_runtime import ENTRY, HINTS, openvino_settings


@dataclass(frozen=True)
class OpenVinoVariant:
    name: str
    source: str  # the exported ONNX file it runs
    file: str
    hint: str
    precision: str


VARIANTS = (
    OpenVinoVariant("openvino-int8", INT8, "model.int8.openvino.onnx", "f32", "int8 u8/s8"),
    OpenVinoVariant("openvino-fp32", FP32, "model.openvino.onnx", "f32", "fp32"),
    OpenVinoVariant("openvino-bf16", FP32, "model.bf16.openvino.onnx", "bf16", "bf16"),
)


@dataclass(frozen=True)
class OpenVinoPlan:
    """The variants to write (empty: none) and why some or all are left out."""

    variants: tuple[OpenVinoVariant, ...]
    notes: tuple[str, ...]
    capabilities: tuple[str, ...] = ()  # OpenVINO's OPTIMIZATION_CAPABILITIES of this CPU, where it was asked


def plan(setting: bool | str, int8: bool) -> OpenVinoPlan:
    """`auto` skips with a note where openvino is missing; `true` makes its absence an error; `false`: none. The CPU's
    capabilities are asked in a child process: this one never imports openvino (`detops.isolated`)."""
    from detops.inference.openvino_runtime import capability_names, openvino_installed
    from detops.isolated import run_isolated

    if setting is False:
        return OpenVinoPlan((), ())
    if not openvino_installed():
        if setting is True:
            raise ExportError("export.openvino is true but openvino is not installed (pip install "
                              "'detops[openvino]'). Set export.openvino=auto to go on with ONNX Runtime alone.")
        return OpenVinoPlan((), ("OpenVINO variants skipped: openvino is not installed (pip install "
                                 "'detops[openvino]'); going on with ONNX Runtime",))
    capabilities = tuple(run_isolated(capability_names))
    return replace(offered(capabilities, int8), capabilities=capabilities)


def offered(capabilities: tuple[str, ...], int8: bool) -> OpenVinoPlan:
    """The variants a CPU with `capabilities` can run, the INT8 one only where an INT8 file is exported."""
    chosen, notes = [], []
    for variant in VARIANTS:
        if variant.source == INT8 and not int8:
            continue
        missing = [c for c in HINTS[variant.hint] if c not in capabilities]
        if missing:
            notes.append(f"{variant.name} not offered: this CPU lacks {', '.join(missing)} "
                         f"(OpenVINO reports {', '.join(capabilities)})")
            continue
        chosen.append(variant)
    return OpenVinoPlan(tuple(chosen), tuple(notes))


def write_openvino_variants(variants: tuple[OpenVinoVariant, ...], folder: Path) -> list[VariantFile]:
    """A copy of each exported source graph, its metadata (precision included) extended by the variant's precision
    hint, in `variants` order."""
    import onnx

    out = []
    for variant in variants:
        source = folder / variant.source
        model = onnx.load(str(source))
        meta = next(ModelMeta.from_json(p.value, str(source)) for p in model.metadata_props if p.key == METADATA_KEY)
        set_metadata(model, replace(meta, extra={**meta.extra, ENTRY: openvino_settings(variant.hint)}))
        onnx.save(model, str(folder / variant.file))
        out.append(VariantFile(variant.name, folder / variant.file, variant.precision, "cpu"))
    return out
