"""The verdict rule, in one place: what a set of drifted columns means.

`insufficient data` when the batch (or the reference) has fewer than `min_batch_size` readable images: a drift
test on a handful of rows says nothing either way. Otherwise `drift` when the share of drifted columns is at least
`drift_share`, or when any drifted column matches one of `critical_columns` (names or globs such as `class_*`);
else `no drift`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from detops.config.monitor import MonitorParams

DRIFT = "drift"
NO_DRIFT = "no drift"
INSUFFICIENT = "insufficient data"


def matches(column: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(column, pattern) for pattern in patterns)


def decide(drifted: list[str], tested: int, share: float, params: MonitorParams) -> tuple[str, str]:
    """(verdict, why) for `drifted` of `tested` columns; `share` is Evidently's share of drifted columns."""
    critical = [c for c in drifted if matches(c, params.critical_columns)]
    counted = f"{len(drifted)} of {tested} column(s) drifted"
    if share >= params.drift_share:
        return DRIFT, f"{counted}: share {share:.2f} >= drift_share {params.drift_share}"
    if critical:
        return DRIFT, f"{counted}, critical: {', '.join(critical)}"
    if drifted:
        return NO_DRIFT, (f"{counted} (share {share:.2f} < drift_share {params.drift_share}) and none of them is "
                          "critical")
    return NO_DRIFT, f"none of the {tested} column(s) drifted"
