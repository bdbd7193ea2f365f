"""One `run(ws, ...)` per pipeline verb: the single entry point the CLI, Prefect tasks and tests call."""
