"""Prefect flows that compose the detops tasks: `retrain` is the main one."""
