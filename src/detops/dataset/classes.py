"""The one class-set check, wherever two class lists meet: a model and the split it is scored on, the labelling
model and the labels it audits, a model's pre-annotations and the dataset, a batch or Label Studio's boxes and the
dataset.

Classes compare by (dataset id, name) when both sides give ids (`{id: name}`), else by name. Classes `theirs` has
and the reference `ours` lacks are always an error; with `exact`, so are the reference's classes `theirs` lacks (a
model is scored only on a split of exactly its classes). One rule, one `ClassSetMismatch` (a `DataError`), whose
message names the file or object (`who`), both class lists, the difference and the caller's fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from detops.errors import ClassSetMismatch

Classes = Mapping[int, str] | Iterable[str]  # {dataset id: name}, or names alone


def check_classes(theirs: Classes, ours: Classes, *, who: str, ref: str, fix: str, exact: bool = False,
                  examples: Mapping[str, str] | None = None, ref_file: str | None = None) -> None:
    """ClassSetMismatch when `theirs` (the classes of `who`) holds one that `ours` (the reference, `ref`: "the
    dataset", "the split") lacks, or, with `exact`, lacks one of `ours`. `examples` names where a class was seen
    (e.g. an image file); `ref_file` the file the reference was read from."""
    error = class_mismatch(theirs, ours, who=who, ref=ref, fix=fix, exact=exact, examples=examples, ref_file=ref_file)
    if error is not None:
        raise error


def class_mismatch(theirs: Classes, ours: Classes, *, who: str, ref: str, fix: str, exact: bool = False,
                   examples: Mapping[str, str] | None = None, ref_file: str | None = None) -> ClassSetMismatch | None:
    """`check_classes`' error, returned rather than raised (None when the classes agree), for a caller that reports
    it beside other problems."""
    with_ids = isinstance(theirs, Mapping) and isinstance(ours, Mapping)
    mine, reference = _pairs(theirs, with_ids), _pairs(ours, with_ids)
    lacking = sorted(mine - reference)
    extra = sorted(reference - mine) if exact else []
    if not lacking and not extra:
        return None
    seen = examples or {}
    difference = (f"new in {ref}: {_listing(extra, with_ids, seen)}; "
                  f"missing from {ref}: {_listing(lacking, with_ids, seen)}")
    where = f" in {ref_file}" if ref_file else ""
    if exact:
        message = (f"{who}: its classes {_names(mine)}{_ids(mine, with_ids)} differ from {ref}'s {_names(reference)}"
                   f"{_ids(reference, with_ids)}{where} ({difference}).")
    else:
        owner = ref[0].upper() + ref[1:]
        message = (f"{who}: class(es) {ref} lacks: {_listing(lacking, with_ids, seen)}. {owner}'s classes are "
                   f"{_names(reference)}{where}.")
    return ClassSetMismatch(f"{message} {fix}", difference)


def _pairs(classes: Classes, with_ids: bool) -> set[tuple[int, str]]:
    if isinstance(classes, Mapping):
        return {(int(i) if with_ids else 0, str(name)) for i, name in classes.items()}
    return {(0, str(name)) for name in classes}


def _names(pairs: set[tuple[int, str]]) -> list[str]:
    return [name for _, name in sorted(pairs)]  # id order, or name order without ids (all 0)


def _ids(pairs: set[tuple[int, str]], with_ids: bool) -> str:
    return f" (ids {[i for i, _ in sorted(pairs)]})" if with_ids else ""


def _listing(pairs: list[tuple[int, str]], with_ids: bool, examples: Mapping[str, str]) -> str:
    if not pairs:
        return "none"
    return ", ".join((f"{name} (id {i})" if with_ids else repr(name))
                     + (f" (e.g. {examples[name]})" if name in examples else "") for i, name in pairs)
