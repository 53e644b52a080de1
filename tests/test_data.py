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


# ================================================================================ load_dataset
from xdream_ts.data import Dataset, load_dataset  # noqa: E402

SHARED_UEA = SHARED_UCR.parent / "uea"

TS_HEADER = "#comment\n@problemName Tiny\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n" \
            "@equalLength false\n@classLabel true a b\n@data\n"


@pytest.mark.parametrize("gz", [False, True])
def test_ts_multivariate_unequal_missing(tmp_path, gz):
    text = TS_HEADER + "1,2,3,4:10,20,30,40:a\n5,?,7:50,60,70:b\n"
    path = tmp_path / f"Tiny_TRAIN.ts{'.gz' if gz else ''}"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    d = load_dataset(path)
    assert d.X.shape == (2, 2, 4) and d.X.dtype == np.float32 and d.channels == 2 and d.length == 4
    assert d.y.tolist() == ["a", "b"] and d.lengths.tolist() == [4, 3]
    np.testing.assert_allclose(d.X[0], [[1, 2, 3, 4], [10, 20, 30, 40]])
    # series 2: '?' interpolated (6), then length 3 resampled to 4 over the same span
    np.testing.assert_allclose(d.X[1, 0], np.interp(np.linspace(0, 2, 4), [0, 1, 2], [5, 6, 7]), rtol=1e-6)
    assert np.isfinite(d.X).all() and not d.znormalized
    assert any("lengths 3 to 4" in n for n in d.notes) and any("interpolated" in n for n in d.notes)
    # the model's length: resampled, said once
    d8 = load_dataset(path, length=8)
    assert d8.X.shape == (2, 2, 8) and sum("resampled to 8" in n for n in d8.notes) == 1


def test_ts_folder_both_splits_and_name_lookup(tmp_path, monkeypatch):
    folder = tmp_path / "Tiny"
    folder.mkdir()
    (folder / "Tiny_TRAIN.ts").write_text(TS_HEADER + "1,2:3,4:a\n")
    (folder / "Tiny_TEST.ts").write_text(TS_HEADER + "5,6,7:8,9,10:b\n")
    d = load_dataset(folder)
    assert d.n == 2 and d.length == 3 and d.y.tolist() == ["a", "b"] and "train+test" in d.source
    assert load_dataset(folder, split="test").n == 1
    monkeypatch.setenv("XDREAM_TS_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "Tiny")
    assert load_dataset("Tiny", split="train").X.shape == (1, 2, 2)


def test_ucr_via_load_dataset(tmp_path):
    _write(tmp_path / "Tiny", "Tiny", gz=True)
    d = load_dataset(tmp_path / "Tiny")
    assert d.X.shape == (3, 1, 3) and d.y.tolist() == [1, 2, 1]
    # the test file's NaN padding: its one series has 2 values, resampled to 3
    np.testing.assert_allclose(d.X[2, 0], [0, 0, 0])
    assert d.univariate().shape == (3, 3) and d.squeeze().shape == (3, 3)


def test_npy_npz_csv(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(5, 2, (6, 3, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    d = load_dataset(tmp_path / "x.npy")
    np.testing.assert_array_equal(d.X, X)
    assert d.y is None and not d.znormalized
    with pytest.raises(UserError, match="1 channel"):
        d.univariate()
    X2 = rng.standard_normal((4, 30))
    X2 = (X2 - X2.mean(1, keepdims=True)) / X2.std(1, keepdims=True)
    X2[1, 25:] = np.nan  # padding
    np.savez(tmp_path / "u.npz", X=X2, y=np.array([0, 1, 0, 1]))
    d = load_dataset(tmp_path / "u.npz")
    assert d.X.shape == (4, 1, 30) and d.y.tolist() == [0, 1, 0, 1] and d.lengths.tolist() == [30, 25, 30, 30]
    assert d.znormalized is False  # series 1's observed part is not z-normalised on its own
    X2[1, :25] = (X2[1, :25] - X2[1, :25].mean()) / X2[1, :25].std()
    np.savez(tmp_path / "z.npz", X2)  # the only array, no labels
    assert load_dataset(tmp_path / "z.npz").znormalized
    (tmp_path / "s.csv").write_text("label,t0,t1,t2,t3\ncat,1,2,3,4\ndog,5,,7\n")
    d = load_dataset(tmp_path / "s.csv")
    assert d.X.shape == (2, 1, 4) and d.y.tolist() == ["cat", "dog"] and d.lengths.tolist() == [4, 3]
    (tmp_path / "n.csv").write_text("1;2;3\n4;5;6\n")
    np.testing.assert_allclose(load_dataset(tmp_path / "n.csv").X[:, 0], [[1, 2, 3], [4, 5, 6]])
    d = Dataset.from_arrays(X[:, :1, :], length=40)
    assert d.X.shape == (6, 1, 40) and d.source == "array" and len(d.notes) == 1


@pytest.mark.parametrize("name,text,line,what", [
    ("a.ts", TS_HEADER + "1,2:3,4:a\n1,2:a\n", 11, "has 1 channel(s) but the @dimensions header says 2"),
    ("b.ts", TS_HEADER + "1,2:3,x:a\n", 10, "channel 2, value 2 is 'x', not a number"),
    ("c.ts", TS_HEADER + "1,2:3,4:z\n", 10, "not one of the classes"),
    ("d.ts", "@dimensions 2\n1,2:3,4\n", 2, "before the '@data' line"),
    ("e.ts", "@timeStamps true\n@data\n", 1, "timestamped"),
    ("f.ts", TS_HEADER + "?,?:3,4:a\n", 10, "channel 1 has no values"),
    ("g.csv", "1,2,3\n4,abc,6\n", 2, "value 2 is 'abc', not a number"),
    ("h.tsv", "1\t2\t3\n1\t2\n", 2, "has 1 values"),
])
def test_malformed_files_name_file_and_line(tmp_path, name, text, line, what):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(UserError) as err:
        load_dataset(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p) in msg and f"line {line}" in msg and what in msg, msg


def test_unknown_and_missing(tmp_path):
    (tmp_path / "x.txt").write_text("1 2 3\n")
    with pytest.raises(UserError, match="unknown data format"):
        load_dataset(tmp_path / "x.txt")
    with pytest.raises(UserError, match="not found"):
        load_dataset(tmp_path / "nothing_here")
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(UserError, match=r"expected \(n, length\) or \(n, channels, length\)"):
        load_dataset(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="cannot read .*obj.npy.*no object arrays"):
        load_dataset(tmp_path / "obj.npy")
    (tmp_path / "Two").mkdir()
    (tmp_path / "Two" / "Two_TRAIN.ts").write_text(TS_HEADER + "1,2:3,4:a\n")
    (tmp_path / "Two" / "Two_TEST.ts").write_text(TS_HEADER + "1,2:3,4:a\n?:5:b\n")
    with pytest.raises(UserError, match=r"Two_TEST.ts, line 11: channel 1 has no values"):
        load_dataset(tmp_path / "Two")  # the second file's line, after stacking the splits


@pytest.mark.skipif(not (SHARED_UEA / "JapaneseVowels").is_dir(), reason=f"UEA files not available at {SHARED_UEA}")
def test_real_japanese_vowels():
    d = load_dataset(SHARED_UEA / "JapaneseVowels")
    assert d.X.shape == (640, 12, 29) and d.y.dtype == np.int64 and set(d.y.tolist()) == set(range(1, 10))
    assert d.lengths.min() == 7 and d.lengths.max() == 29 and np.isfinite(d.X).all()
    assert not d.znormalized and len(d.notes) == 1
    tr = load_dataset(SHARED_UEA / "JapaneseVowels", split="train", length=32)
    assert tr.X.shape == (270, 12, 32)


@needs_shared
def test_real_ucr_is_znormalized():
    d = load_dataset(SHARED_UCR / "GunPoint")
    assert d.X.shape == (200, 1, 150) and d.znormalized and d.notes == []
    np.testing.assert_array_equal(d.X[:50, 0], load_ucr(SHARED_UCR / "GunPoint").X_train)
