"""detops: a workflow-orchestrated MLOps pipeline for object detection.

The library holds the domain logic as plain functions; `detops.steps.<verb>.run` is the one entry
point per pipeline step that the CLI, the Prefect tasks, DVC stages and tests all call.
"""

__version__ = "0.1.0"
