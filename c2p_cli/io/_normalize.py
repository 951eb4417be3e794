"""Centring and scaling a cloud into the unit sphere."""

from __future__ import annotations

import numpy as np


def unit_sphere_transform(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre [1, 3], scale) such that (points - centre) / scale is centred on the mean and fits
    the unit sphere. Computed on coordinates divided by their largest magnitude, so neither the mean
    nor the squared norms overflow for huge (but finite) values. A cloud of coincident points gets
    the scale 1 (it can only be centred)."""
    p = np.asarray(points, dtype=np.float64)
    if not len(p):
        return np.zeros((1, 3)), 1.0
    magnitude = float(np.abs(p).max())
    magnitude = magnitude if np.isfinite(magnitude) and magnitude > 0 else 1.0
    q = p / magnitude
    centre = q.mean(axis=0, keepdims=True)
    radius = float(np.sqrt(((q - centre) ** 2).sum(axis=1).max()))
    return centre * magnitude, (radius if radius > 0 else 1.0) * magnitude


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre on the mean and divide by the largest norm, so that the cloud fits the unit sphere.

    A cloud of coincident points is only centred (it cannot be scaled). Returns float32.
    """
    p = np.asarray(points, dtype=np.float64)
    centre, scale = unit_sphere_transform(p)
    return ((p - centre) / scale).astype(np.float32)
