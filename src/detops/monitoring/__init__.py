"""Drift monitoring: per-image features, new data batches, the Evidently comparison and its verdict."""
