"""The embedded synthetic dataset: deterministic, learnable shapes on textured backgrounds (`detops sample`)."""
