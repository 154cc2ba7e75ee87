import pytest

from metacompress.data import resolve_data_root
from metacompress.errors import DataError, UserError


def test_explicit_argument_wins_over_env(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("METACOMPRESS_DATA", str(tmp_path / "b"))
    assert resolve_data_root(tmp_path / "a") == (tmp_path / "a").resolve()
    assert resolve_data_root(str(tmp_path / "a")) == (tmp_path / "a").resolve()


def test_env_used_when_no_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path.resolve()


def test_no_root_at_all(no_data_env):
    with pytest.raises(DataError, match="METACOMPRESS_DATA"):
        resolve_data_root(None)


def test_empty_env_counts_as_unset(monkeypatch):
    monkeypatch.setenv("METACOMPRESS_DATA", "")
    with pytest.raises(DataError, match="no data root"):
        resolve_data_root(None)


def test_missing_directory_names_path(tmp_path, expect_data_error):
    missing = tmp_path / "nowhere"
    with expect_data_error(missing, match="does not exist"):
        resolve_data_root(missing)


def test_env_pointing_at_file(tmp_path, monkeypatch, expect_data_error):
    f = tmp_path / "file.txt"
    f.write_text("x")
    monkeypatch.setenv("METACOMPRESS_DATA", str(f))
    with expect_data_error(f, match="not a directory") as info:
        resolve_data_root(None)
    assert "METACOMPRESS_DATA" in str(info.value)
    assert isinstance(info.value, UserError)
