import numpy as np
import pytest
import torch

from metacompress.metrics import rmse
from metacompress.modalities.sphere import sphere_coordinates


def test_grid_points_are_unit_vectors_with_the_right_geometry():
    lat, lon = np.array([-90.0, 0.0, 45.0, 90.0]), np.array([-180.0, 0.0, 90.0, 180.0])
    xyz = sphere_coordinates(lat, lon).view(4, 4, 3)
    assert torch.allclose(xyz.norm(dim=-1), torch.ones(4, 4), atol=1e-6)
    assert torch.allclose(xyz[1, 1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # equator, Greenwich
    assert torch.allclose(xyz[1, 2], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # equator, 90°E
    assert torch.allclose(xyz[1, 0], xyz[1, 3], atol=1e-6)  # −180° and 180° are one meridian
    assert torch.allclose(xyz[3], torch.tensor([0.0, 0.0, 1.0]).expand(4, 3), atol=1e-6)  # north pole
    assert xyz[2, 1, 2] == pytest.approx(np.sqrt(0.5), abs=1e-6)


def test_rmse_in_units_ignores_missing_points():
    reference = np.array([[1.0, np.nan], [3.0, 4.0]])
    assert rmse(reference, reference + 2.0) == pytest.approx(2.0)
    assert rmse(reference, np.array([[1.0, 0.0], [3.0, 1.0]])) == pytest.approx(np.sqrt(3.0))
