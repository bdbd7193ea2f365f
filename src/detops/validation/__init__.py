"""Data quality gate: image integrity in parallel, then every rule as a Great Expectations expectation.

GX is imported only when `validate_dataset` runs, so importing this package stays cheap.
"""

from detops.validation.gate import Problem, RuleOutcome, ValidationOutcome, validate_dataset
from detops.validation.integrity import check_images, trusted_integrity

__all__ = ["Problem", "RuleOutcome", "ValidationOutcome", "check_images", "trusted_integrity", "validate_dataset"]
