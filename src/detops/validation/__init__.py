"""Data quality gate: image integrity in parallel (`integrity`), then every rule as a Great Expectations
expectation (`gate`; GX is imported only when `validate_dataset` runs). Import from the modules themselves.
"""
