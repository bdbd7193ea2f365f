"""Latency and throughput of predictors: warm-up first, interleaved rounds, medians and tails.

Two views at batch 1: end to end (letterbox, model, decode with the serving thresholds: what a caller waits
for, image already decoded) and the graph alone (what the runtime spends). Throughput at the largest batch
is end to end, in images/s.

Variants are timed in interleaved rounds so machine noise spreads over all of them alike. The torch
checkpoint is timed last, on its own: its OpenMP workers keep spinning after a call, and an ONNX Runtime
session timed right after one ran 3x slower on 2 cores (graph 2.4 -> 8.5 ms, measured here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from detops.inference.decode import Thresholds
from detops.inference.predictor import Predictor

ROUNDS = 3


@dataclass(frozen=True)
class Latency:
    e2e_p50_ms: float
    e2e_p95_ms: float
    graph_p50_ms: float
    graph_p95_ms: float
    throughput_batch: int
    throughput_ips: float

    def to_dict(self) -> dict[str, float | int]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _times(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure_all(predictors: dict[str, Predictor], images: list[np.ndarray], serving: Thresholds, batch: int,
                runs: int, warmup: int) -> dict[str, Latency]:
    """Time every predictor on decoded RGB `images` (the first at batch 1, cycled to fill `batch`)."""
    torch_last = sorted(predictors, key=lambda name: predictors[name].kind == "torch")
    groups = [[n for n in torch_last if predictors[n].kind != "torch"], [n for n in torch_last
                                                                         if predictors[n].kind == "torch"]]
    out = {}
    for group in groups:
        if group:
            out.update(_measure_group({n: predictors[n] for n in group}, images, serving, batch, runs, warmup))
    return {name: out[name] for name in predictors}


def _measure_group(predictors: dict[str, Predictor], images: list[np.ndarray], serving: Thresholds, batch: int,
                   runs: int, warmup: int) -> dict[str, Latency]:
    one = images[:1]
    many = [images[i % len(images)] for i in range(batch)]
    servers = {name: p.with_thresholds(serving) for name, p in predictors.items()}  # timed as deployed
    inputs = {name: p.preprocess(one)[0] for name, p in servers.items()}
    e2e: dict[str, list[float]] = {n: [] for n in servers}
    graph: dict[str, list[float]] = {n: [] for n in servers}
    batched: dict[str, list[float]] = {n: [] for n in servers}
    per_round = max(1, -(-runs // ROUNDS))
    for round_index in range(ROUNDS):
        for name, p in servers.items():
            if round_index == 0:
                _times(partial(p.predict_arrays, one), warmup)
                _times(partial(p.predict_arrays, many), 1)
            e2e[name] += _times(partial(p.predict_arrays, one), per_round)
            graph[name] += _times(partial(p.runtime, inputs[name]), per_round)
            batched[name] += _times(partial(p.predict_arrays, many), max(1, per_round // batch))
    return {name: Latency(
        e2e_p50_ms=float(np.percentile(e2e[name], 50) * 1000), e2e_p95_ms=float(np.percentile(e2e[name], 95) * 1000),
        graph_p50_ms=float(np.percentile(graph[name], 50) * 1000),
        graph_p95_ms=float(np.percentile(graph[name], 95) * 1000),
        throughput_batch=batch, throughput_ips=float(batch / np.median(batched[name])),
    ) for name in servers}
