"""Prefect deployments of the retraining flow: declared in `spec`, applied by `server`, notified by `notify`."""
