"""Read UCR time-series archive files (the 2018 TSV format).

A UCR dataset ``NAME`` is two files, ``NAME_TRAIN.tsv`` and ``NAME_TEST.tsv`` (or gzipped, ``.tsv.gz``):
one series per line, the class label first, then the values, tab separated, no header. Series in the
archive are z-normalised per series; this loader returns them exactly as stored (no normalisation).

``load_ucr`` accepts

- a folder holding ``NAME_TRAIN.tsv[.gz]`` and ``NAME_TEST.tsv[.gz]`` (for example ``UCRArchive_2018/FordA``),
- a path to one ``.tsv`` / ``.tsv.gz`` file: returns ``(X, y)`` of that file,
- a dataset name such as ``"FordA"``, looked up in the folders listed in the environment variable
  ``XDREAM_TS_DATA`` (separated by ``os.pathsep``, ``:`` on Linux); each folder may hold
  ``NAME/NAME_TRAIN.tsv`` or ``NAME_TRAIN.tsv`` directly.

Values come back as float32 arrays shaped ``(n, length)``. Variable-length datasets in the 2018 archive
are padded at the end with ``NaN``: the padding is kept as NaN (drop it per series with
``x[~np.isnan(x)]``). Labels come back as given: an int64 array when every label is integral
(``-1``, ``1.0``), a float64 array when numeric but not integral, otherwise an array of strings.
Comma-separated files (the pre-2018 archive format) are read too.

Every problem raises :class:`xdream_ts.errors.UserError` with one line: where it looked, or which file
and line is malformed and how.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import UserError

ENV_VAR = "XDREAM_TS_DATA"
SPLITS = ("train", "test")
_SUFFIXES = (".tsv", ".tsv.gz")


class UCRData(NamedTuple):
    """Both splits of a UCR dataset. ``X_*``: float32 (n, length), NaN padding kept; ``y_*``: labels."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def _labels(tokens: list[str]) -> np.ndarray:
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        return np.array(tokens, dtype=str)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values


def read_ucr_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one UCR TSV (or .tsv.gz) file: ``(X float32 (n, length), y labels)``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"UCR file not found: {path}; pass an existing NAME_TRAIN.tsv or NAME_TEST.tsv(.gz) file")
    labels: list[str] = []
    rows: list[np.ndarray] = []
    length = None
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                sep = "\t" if "\t" in line else ("," if "," in line else None)
                tokens = [t.strip() for t in line.split(sep)]
                if len(tokens) < 2:
                    raise UserError(
                        f"{path}, line {lineno}: found only a label and no values; a UCR line is "
                        "'label<TAB>value<TAB>value...'")
                try:
                    values = np.array(tokens[1:], dtype=np.float64)
                except ValueError:
                    bad = next(i for i, t in enumerate(tokens[1:], start=2) if not _is_float(t))
                    raise UserError(
                        f"{path}, line {lineno}: column {bad} is {tokens[bad - 1][:30]!r}, not a number; "
                        "a UCR line is 'label<TAB>value<TAB>value...' (missing values as NaN)") from None
                if length is None:
                    length = len(values)
                elif len(values) != length:
                    raise UserError(
                        f"{path}, line {lineno}: has {len(values)} values but earlier lines have {length}; "
                        "every line of a UCR file has the same length (pad short series with NaN)")
                labels.append(tokens[0])
                rows.append(values)
    except (OSError, EOFError, UnicodeError) as exc:  # e.g. a truncated or non-gzip .gz file
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                        "check that it is a UCR .tsv or .tsv.gz file") from None
    if not rows:
        raise UserError(f"{path} holds no series; a UCR file has one 'label<TAB>values...' line per series")
    X = np.stack(rows).astype(np.float32)
    return X, _labels(labels)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _split_file(folder: Path, name: str, split: str) -> Path | None:
    for suffix in _SUFFIXES:
        candidate = folder / f"{name}_{split.upper()}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _dataset_name_in(folder: Path) -> str | None:
    """The NAME of the NAME_TRAIN/NAME_TEST files in ``folder`` (the folder's own name wins)."""
    if _split_file(folder, folder.name, "train") or _split_file(folder, folder.name, "test"):
        return folder.name
    names = set()
    for p in folder.iterdir():
        for split in ("_TRAIN", "_TEST"):
            for suffix in _SUFFIXES:
                if p.name.endswith(split + suffix):
                    names.add(p.name[: -len(split + suffix)])
    if len(names) > 1:
        raise UserError(
            f"{folder} holds several UCR datasets ({', '.join(sorted(names))}); pass the dataset name "
            f"with {ENV_VAR}={folder} or a folder with only one dataset")
    return names.pop() if names else None


def _search_folders() -> list[Path]:
    raw = os.environ.get(ENV_VAR, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def _check_split(split: str | None) -> str | None:
    if split is None:
        return None
    s = str(split).lower()
    if s not in SPLITS:
        raise UserError(f"split must be 'train', 'test' or None, not {split!r}")
    return s


def load_ucr(name_or_path: str | os.PathLike, split: str | None = None):
    """Load a UCR dataset from a folder, a single TSV file, or by name via ``$XDREAM_TS_DATA``.

    Returns :class:`UCRData` (both splits) when ``split`` is None, else ``(X, y)`` of that split.
    A single file always returns ``(X, y)``. See the module docstring for formats, NaN padding, labels.
    """
    split = _check_split(split)
    target = Path(name_or_path).expanduser()

    if target.is_file():
        if not target.name.endswith(_SUFFIXES):
            raise UserError(f"{target} is not a .tsv or .tsv.gz file; pass a UCR TSV file or its folder")
        upper = target.name.upper()
        if split is not None and f"_{'TEST' if split == 'train' else 'TRAIN'}." in upper:
            raise UserError(f"{target} is the {'test' if split == 'train' else 'train'} file but split={split!r} "
                            "was asked for; pass the other file or the folder holding both")
        return read_ucr_file(target)

    looked: list[str] = []
    found: tuple[Path, str] | None = None
    if target.is_dir():
        name = _dataset_name_in(target)
        if name is not None:
            found = (target, name)
        else:
            looked.append(f"{target} (no *_TRAIN.tsv / *_TEST.tsv[.gz] files)")
    else:
        looked.append(f"{target.absolute()} (no such file or folder)")
        name = target.name
        # A bare name (no folder part) is looked up in the folders of $XDREAM_TS_DATA.
        if str(name_or_path) == name:
            folders = _search_folders()
            if not folders:
                looked.append(f"${ENV_VAR} (not set)")
            for folder in folders:
                if not folder.is_dir():
                    looked.append(f"{folder} (${ENV_VAR} entry; no such folder)")
                    continue
                for cand in (folder / name, folder):
                    want = split or "train"
                    if _split_file(cand, name, want) or (split is None and _split_file(cand, name, "test")):
                        found = (cand, name)
                        break
                    looked.append(f"{cand}/{name}_{want.upper()}.tsv[.gz]")
                if found:
                    break

    if found is None:
        raise UserError(
            f"UCR dataset {str(name_or_path)!r} not found; looked in: {'; '.join(looked)}. "
            f"Set {ENV_VAR} to the folder(s) holding your UCR archive (separated by '{os.pathsep}') "
            "or pass the dataset's folder")

    folder, name = found
    wanted = [split] if split else list(SPLITS)
    paths = {}
    for s in wanted:
        p = _split_file(folder, name, s)
        if p is None:
            raise UserError(
                f"{folder} has no {name}_{s.upper()}.tsv or {name}_{s.upper()}.tsv.gz; "
                f"add the file or pass split='{'test' if s == 'train' else 'train'}' to load only the other split")
        paths[s] = p
    loaded = {s: read_ucr_file(p) for s, p in paths.items()}
    if split:
        return loaded[split]
    (X_tr, y_tr), (X_te, y_te) = loaded["train"], loaded["test"]
    if X_tr.shape[1] != X_te.shape[1]:
        raise UserError(f"{paths['train']} has series of length {X_tr.shape[1]} but {paths['test']} has "
                        f"{X_te.shape[1]}; both splits of a UCR dataset have the same length")
    if y_tr.dtype.kind != y_te.dtype.kind:  # e.g. int train labels, float test labels: unify
        if y_tr.dtype.kind in "if" and y_te.dtype.kind in "if":
            y_tr, y_te = y_tr.astype(np.float64), y_te.astype(np.float64)
        else:
            y_tr, y_te = y_tr.astype(str), y_te.astype(str)
    return UCRData(X_tr, y_tr, X_te, y_te, name)


__all__ = ["UCRData", "load_ucr", "read_ucr_file", "ENV_VAR"]
