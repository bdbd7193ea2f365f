"""Where every step reads and writes: one object so no step hard-codes a path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detops.config import Params


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

    # Canonical files passed between steps (names shared by dvc.yaml and the Prefect tasks).
    @property
    def dataset_json(self) -> Path:
        """Output of `import`: every image and box, file names relative to the raw dataset root."""
        return self.prepared / "dataset.json"

    @property
    def validated_json(self) -> Path:
        """Output of `validate`: the dataset that passed the gate (cleaned in `drop` mode)."""
        return self.prepared / "validated.json"

    def split_json(self, split: str) -> Path:
        """Output of `split`: one COCO json per split (`train`, `val`, `test`)."""
        return self.prepared / f"{split}.json"

    @property
    def split_assignments(self) -> Path:
        """Image -> split map kept between runs so old images keep their split as data grows."""
        return self.prepared / "split_assignments.json"

    def relative(self, path: Path) -> str:
        """Path relative to the workspace when inside it (portable across clones), else absolute."""
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(Path(path).resolve())
