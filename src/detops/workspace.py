"""Where every step reads and writes: one object so no step hard-codes a path (file names come from the step
graph, `detops.steps.graph`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from detops.config import Params
from detops.errors import DataError, ParamsError
from detops.steps.graph import STEPS

RESUME_DIR = ".detops/resume"  # an interrupted training's checkpoints: outside every declared output

_VAR = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


@dataclass(frozen=True)
class Workspace:
    """Paths of a detops workspace (the folder holding params.yaml and dvc.yaml)."""

    root: Path
    params: Params

    @classmethod
    def at(cls, root: Path | str, params: Params) -> Workspace:
        return cls(Path(root).resolve(), params)

    def resolve(self, path: str | Path) -> Path:
        """A user path: absolute as given, relative to the workspace root otherwise."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def raw(self) -> Path:
        return self.resolve(self.params.paths.raw)

    @property
    def prepared(self) -> Path:
        return self.resolve(self.params.paths.prepared)

    @property
    def models(self) -> Path:
        return self.resolve(self.params.paths.models)

    @property
    def reports(self) -> Path:
        return self.resolve(self.params.paths.reports)

    # Files passed between steps: read by the names the step graph (`detops.steps.graph`) declares them under.
    def fill(self, template: str) -> Path:
        """A step graph path with its `${param}` references filled in from the params (DVC's interpolation)."""
        flat = self.params.flat()

        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in flat:
                raise ParamsError(f"step graph: ${{{key}}} is not a param")
            return str(flat[key])

        return self.resolve(_VAR.sub(sub, template))

    def outputs(self, step: str) -> dict[str, Path]:
        """Every output `step` declares, by name, as absolute paths."""
        return {out.name: self.fill(out.path) for out in STEPS[step].outs}

    def output(self, step: str, name: str) -> Path:
        """One declared output of `step` (`ws.output("train", "best")`), as an absolute path."""
        for out in STEPS[step].outs:
            if out.name == name:
                return self.fill(out.path)
        raise KeyError(f"step {step!r} declares no output {name!r} (it has {[o.name for o in STEPS[step].outs]})")

    def checkpoint(self) -> Path:
        """The trained model every step after `train` reads: its `best` output, and only that one.

        `last` (the full final state) and the resume checkpoint of an interrupted run
        (`detops.training.resume`) are for training alone: going on from them would evaluate, export and register
        weights that `train` never selected."""
        best = self.output("train", "best")
        if best.is_file():
            return best
        interrupted = any((self.root / RESUME_DIR).glob("*.ckpt"))
        how = (f"{RESUME_DIR} holds a checkpoint, so training was interrupted: `detops train` goes on from it"
               if interrupted else "Run `detops train` first")
        raise DataError(f"{best}: checkpoint not found. {how}.")

    @property
    def dataset_json(self) -> Path:
        """Output of `import`: every image and box, file names relative to the raw dataset root."""
        return self.output("import", "dataset")

    @property
    def validated_json(self) -> Path:
        """Output of `validate`: the dataset that passed the gate (cleaned in `drop` mode)."""
        return self.output("validate", "validated")

    def split_json(self, split: str) -> Path:
        """Output of `split`: one COCO json per split (`train`, `val`, `test`)."""
        return self.output("split", split)

    @property
    def split_assignments(self) -> Path:
        """Image -> split map kept between runs so old images keep their split as data grows."""
        return self.output("split", "assignments")

    def relative(self, path: Path) -> str:
        """Path relative to the workspace when inside it (portable across clones), else absolute."""
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(Path(path).resolve())
