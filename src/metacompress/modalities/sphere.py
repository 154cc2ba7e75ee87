"""Data on the sphere: a latitude/longitude grid as points on the unit sphere (thesis §5.3.2).

Using (cos λ cos φ, cos λ sin φ, sin λ) instead of (λ, φ) makes the network see the globe's true
geometry: longitudes −180° and 180° are the same point, and so is every longitude at a pole.
"""

from __future__ import annotations

import numpy as np
import torch

from metacompress.modalities.grid import grid_coordinates


def sphere_coordinates(latitudes_deg: np.ndarray, longitudes_deg: np.ndarray) -> torch.Tensor:
    """(lat·lon, 3) unit vectors for every grid point, latitude-major (longitude fastest)."""
    lat = torch.as_tensor(np.radians(np.asarray(latitudes_deg, dtype=np.float64)))
    lon = torch.as_tensor(np.radians(np.asarray(longitudes_deg, dtype=np.float64)))
    angles = grid_coordinates([lat, lon])  # (points, 2): latitude, longitude
    lat, lon = angles[:, 0], angles[:, 1]
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)],
                       dim=-1).float()


def rmse(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """Root-mean-square error in the data's own units (e.g. m/s, °C), ignoring missing (NaN) points."""
    difference = np.asarray(reconstruction, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return float(np.sqrt(np.nanmean(difference ** 2)))
