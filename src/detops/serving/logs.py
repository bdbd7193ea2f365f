"""One log format for every process of a server (LitServe spawns its workers with logging unconfigured)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s detops.serve[%(process)d]: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("detops.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
