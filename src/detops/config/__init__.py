"""Typed params: `params.yaml` is the one source of every default; this package validates it."""

from detops.config.loader import apply_override, dump_defaults, load_params, validate_params
from detops.config.params import VERBS, Params

__all__ = ["VERBS", "Params", "apply_override", "dump_defaults", "load_params", "validate_params"]
