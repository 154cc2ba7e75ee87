import numpy as np
import pytest
from scipy.io import netcdf_file

from metacompress.data import Globe, load_globe
from metacompress.errors import DataError

FERRET = "climate/ferret_noaa_pmel"


def test_navy_winds(data_file):
    g = load_globe(data_file(f"{FERRET}/monthly_navy_winds.cdf"))
    assert isinstance(g, Globe)
    assert g.variables == ("UWND", "VWND") and g.units == ("M/S", "M/S")
    assert g.data.shape == (2, 132, 73, 144) and g.data.dtype == np.float32
    assert g.missing == {"UWND": 0, "VWND": 0} and not np.isnan(g.data).any()
    assert g.latitude[0] == -90 and g.latitude[-1] == 90 and len(g.longitude) == 144
    assert g.time.shape == (132,) and g.time_units.startswith("hour since 1980")


def test_coads_land_is_missing(data_file):
    g = load_globe(data_file(f"{FERRET}/coads_climatology.cdf"))
    assert g.data.shape == (7, 12, 90, 180)
    assert g.variables[0] == "SST"
    for i, name in enumerate(g.variables):
        assert g.missing[name] > 0
        assert g.missing[name] == int(np.isnan(g.data[i]).sum())
    assert np.nanmax(np.abs(g.data)) < 1e4  # no -1e34 fill values left
    only = load_globe(data_file(f"{FERRET}/coads_climatology.cdf"), variables=["SLP", "SST"])
    assert only.variables == ("SLP", "SST")
    assert np.array_equal(only.data[1], g.data[0], equal_nan=True)


def test_etopo_has_no_time(data_file):
    g = load_globe(data_file(f"{FERRET}/etopo20.cdf"))
    assert g.variables == ("ROSE",) and g.data.shape == (1, 1, 540, 1081)
    assert g.time is None and g.missing == {"ROSE": 0}


def test_esku_all_fields(data_file):
    g = load_globe(data_file(f"{FERRET}/esku_heat_budget.cdf"))
    assert g.data.shape == (25, 12, 46, 72) and "AT" in g.variables


def test_requested_variable_errors(data_file, expect_data_error):
    path = data_file(f"{FERRET}/monthly_navy_winds.cdf")
    with expect_data_error(path, match="no variable 'SST'") as info:
        load_globe(path, variables=["SST"])
    assert "UWND" in str(info.value)
    with pytest.raises(DataError, match="coordinate variable"):
        load_globe(path, variables=["TIME"])


def write_synthetic(path):
    """Grid A: (time, depth=1, lat, lon) packed int16; grid B: coarser, (lon, lat) order."""
    nc = netcdf_file(path, "w")
    nc.createDimension("time", None)
    nc.createDimension("depth", 1)
    nc.createDimension("latitude", 3)
    nc.createDimension("longitude", 4)
    nc.createDimension("lat2", 2)
    nc.createDimension("lon2", 2)
    for name, values, units in [("latitude", [-45, 0, 45], "degrees_north"),
                                ("longitude", [0, 90, 180, 270], "degrees_east"),
                                ("lat2", [-45, 45], "degrees_N"), ("lon2", [0, 180], "degrees_E"),
                                ("depth", [5.0], "m")]:
        v = nc.createVariable(name, "f8", (name,))
        v[:] = values
        v.units = units
    t = nc.createVariable("time", "f8", ("time",))
    t.units = "days since 2000-01-01"
    packed = nc.createVariable("temp", "i2", ("time", "depth", "latitude", "longitude"))
    raw = np.arange(2 * 12, dtype=np.int16).reshape(2, 1, 3, 4)
    raw[0, 0, 1, 2] = -999
    packed[:2] = raw
    t[:2] = [0.0, 31.0]
    packed.scale_factor = 0.5
    packed.add_offset = 100.0
    packed._FillValue = np.int16(-999)
    packed.units = "K"
    coarse = nc.createVariable("coarse", "f4", ("time", "lon2", "lat2"))
    coarse[:2] = np.array([[[1, 2], [3, 4]], [[5, np.nan], [7, 8]]], np.float32)
    static = nc.createVariable("mask", "f4", ("latitude", "longitude"))
    static[:] = np.ones((3, 4), np.float32)
    static.missing_value = np.float64(1e20)  # double attribute on float data
    static[:] = np.array([[1, 1, 1e20, 1]] * 3, dtype=np.float32)
    nc.close()


def test_synthetic_layouts(tmp_path, expect_data_error):
    path = tmp_path / "s.nc"
    write_synthetic(path)
    g = load_globe(path)  # default: largest grid (3x4), longest time axis -> temp only
    assert g.variables == ("temp",) and g.data.shape == (1, 2, 3, 4)
    expected = np.arange(24).reshape(2, 3, 4) * 0.5 + 100.0
    expected[0, 1, 2] = np.nan
    assert np.array_equal(g.data[0], expected.astype(np.float32), equal_nan=True)
    assert g.missing == {"temp": 1} and g.units == ("K",)
    assert np.array_equal(g.latitude, [-45, 0, 45]) and np.array_equal(g.time, [0, 31])

    c = load_globe(path, variables=["coarse"])  # stored (time, lon, lat): transposed
    assert c.data.shape == (1, 2, 2, 2)
    assert c.data[0, 0].tolist() == [[1, 3], [2, 4]] and c.missing == {"coarse": 1}

    m = load_globe(path, variables=["mask"])  # no time axis -> length 1
    assert m.data.shape == (1, 1, 3, 4) and m.time is None and m.missing == {"mask": 3}

    with expect_data_error(path, match="must share a grid"):
        load_globe(path, variables=["temp", "coarse"])
    with pytest.raises(DataError, match="time steps"):
        load_globe(path, variables=["temp", "mask"])


def test_not_netcdf(tmp_path, expect_data_error):
    path = tmp_path / "fake.cdf"
    path.write_text("just text, not netCDF\n")
    with expect_data_error(path, match="not a netCDF-3 file"):
        load_globe(path)
    hdf = tmp_path / "four.nc"
    hdf.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="netCDF-4/HDF5 is not supported"):
        load_globe(hdf)
    with pytest.raises(DataError, match="not found"):
        load_globe(tmp_path / "missing.nc")


def test_truncated_netcdf(data_file, tmp_path, expect_data_error):
    src = data_file(f"{FERRET}/monthly_navy_winds.cdf")
    path = tmp_path / "cut.cdf"
    path.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with expect_data_error(path):
        load_globe(path)
