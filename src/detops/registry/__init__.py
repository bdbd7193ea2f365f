"""MLflow model registry: the promotion decision, aliases (champion, previous-champion, challenger), rollback,
pruning and the promotion lock.

Importing this package is light: mlflow and prefect are imported inside the functions that talk to them, so the
CLI's `--help` never pays for them.
"""
