"""Runs one pipeline step in a process of its own and records what it touched: `python _step_sandbox.py ROOT VERB
REPORT [OVERRIDE ...]` (tests/test_pipeline_graph.py).

A fresh interpreter per step, so every module of ours the step needs is imported by the step itself (in one
process, a module first imported by an earlier step would go unseen). Recorded, as JSON in REPORT:
- `reads`: every path under ROOT opened for reading, or listed (`open`, `os.listdir`, `os.scandir` audit events:
  every Python file open, including those by numpy, torch and PIL, goes through them);
- `missing`: every path under ROOT looked for and not found (`os.stat`, which `Path.exists`/`is_file` and
  `os.path.exists` call): a read guarded by an existence check, of a file the sandbox does not hold, leaves no
  `open` event, yet the step does something else without it (logs into another run, skips a check);
- `sections`: the params sections the step read by attribute (`ParamsSpy`);
- `modules`: the modules in `sys.modules` when the step is done.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

READ_EVENTS = ("os.listdir", "os.scandir")


class ParamsSpy:
    """Wraps Params and records which sections a step reads by attribute. Whole-params dumps (`to_dict`,
    `flat`) are provenance (logged, hashed), not inputs, and are not counted."""

    def __init__(self, params: Any, reads: set[str]) -> None:
        self._params, self._reads = params, reads
        self._alias = {name: (info.alias or name) for name, info in type(params).model_fields.items()}

    def __getattr__(self, name: str) -> Any:
        if name in self._alias:
            self._reads.add(self._alias[name])
        return getattr(self._params, name)

    def __eq__(self, other: object) -> bool:
        return self._params == (other._params if isinstance(other, ParamsSpy) else other)

    __hash__ = None  # type: ignore[assignment]


def _opened_for_reading(mode: Any, flags: Any) -> bool:
    """`open` audit event: io.open passes a mode string, os.open None and its flags."""
    if isinstance(mode, str):
        return "r" in mode or "+" in mode
    return isinstance(flags, int) and (flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)


def main(root: Path, verb: str, report: Path, overrides: list[str]) -> None:
    prefix = str(root) + os.sep
    reads: set[str] = set()
    missing: set[str] = set()
    recording = True

    def under_root(path: Any) -> str | None:
        """`path` relative to ROOT, or None. A relative name is relative to a folder's descriptor (`dir_fd`, as
        shutil.rmtree opens) or to the working directory, which the test keeps outside the workspace."""
        if not recording or not isinstance(path, (str, bytes, os.PathLike)):
            return None
        name = os.fsdecode(path)
        if not os.path.isabs(name) or not (name := os.path.normpath(name)).startswith(prefix):
            return None
        return name[len(prefix):]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        read = (event == "open" and _opened_for_reading(*args[1:3])) or event in READ_EVENTS
        if read and (name := under_root(args[0])) is not None:
            reads.add(name)

    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        try:
            return real_stat(path, *args, **kwargs)
        except FileNotFoundError:
            if "dir_fd" not in kwargs and (name := under_root(path)) is not None:
                missing.add(name)
            raise

    from detops.config import load_params
    from detops.steps.graph import STEPS
    from detops.workspace import Workspace

    sections: set[str] = set()
    params = load_params(root / "params.yaml", overrides)
    sys.addaudithook(hook)
    os.stat = stat
    ws = Workspace(root, ParamsSpy(params, sections))  # type: ignore[arg-type]
    importlib.import_module(STEPS[verb].module).run(ws)
    recording = False
    report.write_text(json.dumps({"reads": sorted(reads), "missing": sorted(missing), "sections": sorted(sections),
                                  "modules": sorted(sys.modules)}), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
