"""UCR loader: real archive files (when ../shared is present), tiny files, errors, $XDREAM_TS_DATA."""
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from xdream_ts.data import UCRData, load_ucr, read_ucr_file
from xdream_ts.errors import UserError

SHARED_UCR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ucr"
needs_shared = pytest.mark.skipif(not (SHARED_UCR / "GunPoint").is_dir(),
                                  reason=f"real UCR files not available at {SHARED_UCR}")

TRAIN = "1\t0.5\t-1.0\t2.0\n2\t1.5\t1e-1\t-3\n"
TEST = "1.0\t0.0\t0.0\tNaN\n"


def _write(folder: Path, name: str, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("TRAIN", TRAIN), ("TEST", TEST)):
        path = folder / f"{name}_{split}.tsv{'.gz' if gz else ''}"
        if gz:
            with gzip.open(path, "wt") as fh:
                fh.write(text)
        else:
            path.write_text(text)


@needs_shared
def test_real_gunpoint():
    data = load_ucr(SHARED_UCR / "GunPoint")
    assert isinstance(data, UCRData) and data.name == "GunPoint"
    assert data.X_train.shape == (50, 150) and data.X_test.shape == (150, 150)
    assert data.X_train.dtype == np.float32
    assert data.y_train.dtype == np.int64 and set(data.y_train.tolist()) == {1, 2}
    # the archive is z-normalised per series and returned as stored
    assert np.allclose(data.X_train.mean(axis=1), 0, atol=1e-3)
    X, y = load_ucr(SHARED_UCR / "GunPoint", split="test")
    assert np.array_equal(X, data.X_test) and np.array_equal(y, data.y_test)


@pytest.mark.parametrize("gz", [False, True])
def test_tiny_folder(tmp_path, gz):
    _write(tmp_path / "Tiny", "Tiny", gz)
    data = load_ucr(tmp_path / "Tiny")
    assert data.name == "Tiny"
    np.testing.assert_allclose(data.X_train, [[0.5, -1.0, 2.0], [1.5, 0.1, -3.0]])
    assert data.X_train.dtype == np.float32
    assert data.y_train.tolist() == [1, 2] and data.y_test.tolist() == [1]
    assert data.y_test.dtype == np.int64  # "1.0" is integral
    assert np.isnan(data.X_test[0, 2])  # NaN padding is kept
    # a single file gives (X, y)
    X, y = load_ucr(tmp_path / "Tiny" / f"Tiny_TRAIN.tsv{'.gz' if gz else ''}")
    assert X.shape == (2, 3) and y.tolist() == [1, 2]


def test_string_and_float_labels(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("cat\t1\t2\ndog\t3\t4\n")
    assert read_ucr_file(p)[1].tolist() == ["cat", "dog"]
    p.write_text("0.5\t1\t2\n1\t3\t4\n")
    assert read_ucr_file(p)[1].tolist() == [0.5, 1.0]


def test_missing_lists_places(tmp_path, monkeypatch):
    monkeypatch.setenv("XDREAM_TS_DATA", str(tmp_path / "a") + os.pathsep + str(tmp_path))
    (tmp_path / "a").mkdir()
    with pytest.raises(UserError) as err:
        load_ucr("NoSuchSet")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "a") in msg and str(tmp_path / "NoSuchSet") in msg
    assert "XDREAM_TS_DATA" in msg and "folder" in msg
    with pytest.raises(UserError, match="no such file or folder"):
        load_ucr(tmp_path / "missing_folder")
    monkeypatch.delenv("XDREAM_TS_DATA")
    with pytest.raises(UserError, match="XDREAM_TS_DATA.*not set"):
        load_ucr("NoSuchSet")


@pytest.mark.parametrize("bad,what", [("1\t0.5\tabc\n", "not a number"),
                                      ("1\t0.5\n", "has 1 values"),
                                      ("1\n", "no values")])
def test_malformed_line(tmp_path, bad, what):
    p = tmp_path / "Bad_TRAIN.tsv"
    p.write_text("1\t0.1\t0.2\n2\t0.3\t0.4\n" + bad)
    with pytest.raises(UserError) as err:
        load_ucr(p)
    msg = str(err.value)
    assert "\n" not in msg and "line 3" in msg and str(p) in msg and what in msg


def test_env_lookup(tmp_path, monkeypatch):
    _write(tmp_path / "root" / "Tiny", "Tiny", gz=True)   # NAME/NAME_TRAIN.tsv.gz
    _write(tmp_path / "flat", "Flat", gz=False)            # NAME_TRAIN.tsv directly
    monkeypatch.setenv("XDREAM_TS_DATA", os.pathsep.join(str(tmp_path / d) for d in ("nowhere", "root", "flat")))
    monkeypatch.chdir(tmp_path)
    assert load_ucr("Tiny").X_train.shape == (2, 3)
    X, y = load_ucr("Flat", split="train")
    assert X.shape == (2, 3)
    with pytest.raises(UserError, match="split must be"):
        load_ucr("Flat", split="validation")
