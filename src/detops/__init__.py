"""detops: a workflow-orchestrated MLOps pipeline for object detection.

The library holds the domain logic as plain functions; `detops.steps.<verb>.run` is the one entry
point per pipeline step that the CLI, the Prefect tasks, DVC stages and tests all call.
"""

import os

__version__ = "0.1.0"

# The pipeline runs the same on a machine with no internet: no telemetry from Prefect or MLflow unless the
# user opts in by setting these variables. Every entry point (CLI, flows, tasks) imports detops first.
for _name, _value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                      ("MLFLOW_DISABLE_TELEMETRY", "true")):
    os.environ.setdefault(_name, _value)
