"""The user's real series: one loader for UCR ``.tsv``, UEA/sktime ``.ts``, ``.npy``/``.npz`` and CSV.

``load_dataset(path, length=None, split=None) -> Dataset`` reads any of them (see its docstring); the
older ``load_ucr`` (below) stays for code that wants the two UCR splits apart.

UCR archive files (the 2018 TSV format)
---------------------------------------
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
import hashlib
import os
from dataclasses import dataclass, field, replace
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


def _split_file(folder: Path, name: str, split: str, suffixes=_SUFFIXES) -> Path | None:
    for suffix in suffixes:
        candidate = folder / f"{name}_{split.upper()}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _dataset_name_in(folder: Path, suffixes=_SUFFIXES) -> str | None:
    """The NAME of the NAME_TRAIN/NAME_TEST files in ``folder`` (the folder's own name wins)."""
    if _split_file(folder, folder.name, "train", suffixes) or _split_file(folder, folder.name, "test", suffixes):
        return folder.name
    names = set()
    for p in folder.iterdir():
        for split in ("_TRAIN", "_TEST"):
            for suffix in suffixes:
                if p.name.endswith(split + suffix):
                    names.add(p.name[: -len(split + suffix)])
    if len(names) > 1:
        raise UserError(
            f"{folder} holds several datasets ({', '.join(sorted(names))}); pass the dataset name "
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


# =====================================================================================================
# One loader for every format: load_dataset -> Dataset
# =====================================================================================================
ZNORM_TOL = 0.05  # |mean| and |std - 1| per series and channel; archive files store 6-8 digits
_DATA_SUFFIXES = (".tsv", ".tsv.gz", ".ts", ".ts.gz")  # formats that come as NAME_TRAIN / NAME_TEST pairs
_FILE_SUFFIXES = (".tsv", ".tsv.gz", ".ts", ".ts.gz", ".npy", ".npz", ".csv", ".csv.gz")
_MISSING = {"?", "", "nan", "NaN", "NAN"}
_LABEL_COLUMNS = {"label", "y", "class", "target"}


@dataclass
class Dataset:
    """Real series as the rest of the package uses them.

    X: float32 ``(n, channels, length)``, always three axes, even for univariate data (``univariate()``
       and ``squeeze()`` give the ``(n, length)`` view decoders and scorers use for one channel). Finite:
       padding of unequal lengths is resampled away and missing values (``?``, NaN inside a series) are
       interpolated linearly in time (both said in ``notes``).
    y: labels (int64, float64 or str, as ``load_ucr`` returns them) or None when the file has none.
    source: what was read (paths, split), for messages and the stored config.
    znormalized: every series and channel has mean ~0 and std ~1 (within ``ZNORM_TOL``, std with
       ddof 0 or 1, constant all-zero series allowed), measured on the observed values before any
       resampling. It decides the stimulus space (``xdream_ts.space.StimulusSpace``).
    lengths: (n,) observed length of each series before resampling (the longest of its channels).
    notes: one line each for what the loader did to the data (resampling, interpolation); the caller
       says them once.
    folder: the folder holding the data file(s) (None for arrays): where fitted decoders are cached.
    """

    X: np.ndarray
    y: np.ndarray | None
    source: str
    znormalized: bool
    lengths: np.ndarray
    notes: list = field(default_factory=list)
    folder: Path | None = None

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def channels(self) -> int:
        return int(self.X.shape[1])

    @property
    def length(self) -> int:
        return int(self.X.shape[2])

    def univariate(self) -> np.ndarray:
        """X as (n, length); refuses multichannel data."""
        if self.channels != 1:
            raise UserError(f"{self.source} has {self.channels} channels; a univariate (n, length) view needs 1 "
                            "channel: use a multichannel decoder/target or pick one channel of X")
        return self.X[:, 0]

    def squeeze(self) -> np.ndarray:
        """(n, length) for one channel, (n, channels, length) otherwise: the decoders' output convention."""
        return self.X[:, 0] if self.channels == 1 else self.X

    def resampled(self, length: int) -> "Dataset":
        """The same series resampled to ``length`` (self when it already is); a note says so."""
        if int(length) == self.length:
            return self
        from .series import resample

        X = resample(self.X.astype(np.float64), int(length)).astype(np.float32)
        note = f"{self.source}: series of length {self.length} were resampled to {int(length)} (the model's length)"
        return replace(self, X=X, notes=[*self.notes, note])

    def digest(self) -> str:
        """sha256 of the loaded values (shape included): changes when the file or the length changes."""
        h = hashlib.sha256(repr(self.X.shape).encode())
        h.update(np.ascontiguousarray(self.X).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """JSON-able summary for the stored config."""
        return {"source": self.source, "n": self.n, "channels": self.channels, "length": self.length,
                "znormalized": bool(self.znormalized), "sha256": self.digest(),
                "lengths": [int(self.lengths.min()), int(self.lengths.max())], "notes": list(self.notes)}

    @classmethod
    def from_arrays(cls, X, y=None, length: int | None = None, source: str = "array") -> "Dataset":
        """A Dataset from X (n, L) or (n, c, L), NaN marking missing values or end padding."""
        P = _as_padded(np.asarray(X), source)
        if y is not None:
            y = np.asarray(y)
            if y.shape != (len(P),):
                raise UserError(f"{source}: y has shape {y.shape} for {len(P)} series; pass one label per series")
        return _assemble(P, y, source, length)


def _as_padded(X: np.ndarray, where: str) -> np.ndarray:
    if X.dtype.kind not in "biuf":
        raise UserError(f"{where}: X has dtype {X.dtype}; expected numbers shaped (n, length) or (n, channels, length)")
    if X.ndim == 2:
        X = X[:, None, :]
    if X.ndim != 3 or X.shape[0] < 1 or X.shape[2] < 1:
        raise UserError(f"{where}: X has shape {X.shape}; expected (n, length) or (n, channels, length)")
    X = X.astype(np.float64)
    if np.isinf(X).any():
        raise UserError(f"{where}: X holds inf values; replace them with NaN (missing) or finite numbers")
    return X


def _is_znormalized(P: np.ndarray) -> bool:
    """Every (series, channel) has mean ~0 and std ~1 on its observed (non-NaN) values."""
    count = np.sum(~np.isnan(P), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(P, axis=-1)
        std0 = np.nanstd(P, axis=-1)
        std1 = np.where(count > 1, std0 * np.sqrt(count / np.maximum(count - 1, 1)), std0)
    ok_std = (np.abs(std0 - 1) <= ZNORM_TOL) | (np.abs(std1 - 1) <= ZNORM_TOL)
    # a constant series cannot be normalised; the archives store it as zeros
    flat = (std0 < 1e-6) & (np.abs(mean) <= ZNORM_TOL)
    # a single value has no spread: it says nothing either way
    return bool(np.all((np.abs(mean) <= ZNORM_TOL) & (ok_std | flat) | (count < 2)))


def _fill_row(v: np.ndarray) -> tuple[np.ndarray, bool]:
    """Observed part of one (series, channel): end padding dropped, inner NaN interpolated."""
    obs = np.flatnonzero(~np.isnan(v))
    v = v[: obs[-1] + 1]
    gaps = len(obs) != len(v)
    if gaps:
        v = np.interp(np.arange(len(v)), obs, v[obs])  # before the first value: the first value
    return v, gaps


def _assemble(P: np.ndarray, y, source: str, length: int | None, lines=None, folder=None) -> Dataset:
    """(n, c, Lmax) float64 with NaN -> Dataset at one length, finite."""
    n, c, _ = P.shape
    observed = ~np.isnan(P)
    has = observed.any(axis=-1)
    if not has.all():
        i, k = map(int, np.argwhere(~has)[0])
        at = lines[i] if lines is not None else f"{source}, series {i + 1}"
        raise UserError(f"{at}: channel {k + 1} has no values (all missing); every series needs at "
                        "least one observed value per channel")
    znorm = _is_znormalized(P)
    # observed length per (series, channel): up to the last observed value; what follows is padding
    last = P.shape[-1] - np.argmax(observed[..., ::-1], axis=-1)
    lengths = last.max(axis=1)
    equal = bool(np.all(last == last.flat[0]))
    target = int(length) if length else int(last.max())
    if target < 1:
        raise UserError(f"length={length}; pass a positive series length")
    notes = []
    inner_gaps = bool((~observed & (np.arange(P.shape[-1]) < last[..., None])).any())
    if equal and not inner_gaps and target == last.flat[0]:
        X = P[..., :target]  # the common case: nothing to do
    else:
        from .series import resample

        X = np.empty((n, c, target))
        for i in range(n):
            for k in range(c):
                v, _ = _fill_row(P[i, k])
                X[i, k] = resample(v, target) if len(v) > 1 else v[0]
        if inner_gaps:
            notes.append(f"{source}: missing values inside series were interpolated linearly in time")
        lo, hi = int(last.min()), int(last.max())
        if not equal:
            why = "the model's length" if length else "the longest; pass length= to choose"
            notes.append(f"{source}: series have lengths {lo} to {hi}; each was resampled to {target} ({why})")
        elif target != lo:
            notes.append(f"{source}: series of length {lo} were resampled to {target} (the model's length)")
    return Dataset(X.astype(np.float32), y, source, znorm, lengths.astype(np.int64), notes, folder)


# ----------------------------------------------------------------------------------------- readers
def _parse_value(token: str) -> float:
    t = token.strip()
    return np.nan if t in _MISSING else float(t)


def _pad(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Cases of per-channel 1-D arrays -> (n, c, Lmax), NaN at the end."""
    lmax = max(len(ch) for r in rows for ch in r)
    P = np.full((len(rows), len(rows[0]), lmax), np.nan)
    for i, r in enumerate(rows):
        for k, ch in enumerate(r):
            P[i, k, : len(ch)] = ch
    return P


def read_ts_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Read a UEA/sktime ``.ts`` (or ``.ts.gz``) file: ``(P (n, c, Lmax) NaN-padded, labels or None, lines)``.

    ``@`` header lines, then after ``@data`` one case per line: channels separated by ``:``, values by
    ``,``, ``?`` for a missing value, the label last when ``@classLabel true`` (or ``@targetLabel true``).
    Timestamped files (``@timeStamps true``) are refused.
    """
    path = Path(path)
    dims = None
    has_label = None
    classes = None
    in_data = False
    rows: list[list[np.ndarray]] = []
    labels: list[str] = []
    lines: list[int] = []
    try:
        with _open_text(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("@"):
                    key, _, rest = line[1:].partition(" ")
                    key, rest = key.lower(), rest.strip()
                    words = rest.split()
                    if key == "data":
                        in_data = True
                    elif key == "timestamps" and words and words[0].lower() == "true":
                        raise UserError(f"{path}, line {lineno}: timestamped .ts files are not supported; "
                                        "export the series without timestamps (@timeStamps false)")
                    elif key in ("dimensions", "dimension"):
                        try:
                            dims = int(words[0])
                        except (IndexError, ValueError):
                            raise UserError(f"{path}, line {lineno}: '@{key}' needs a whole number of channels, "
                                            f"found {rest[:30]!r}") from None
                    elif key == "classlabel":
                        if not words or words[0].lower() not in ("true", "false"):
                            raise UserError(f"{path}, line {lineno}: '@classLabel' must be followed by true or "
                                            f"false (then the class names), found {rest[:30]!r}")
                        has_label = words[0].lower() == "true"
                        classes = set(words[1:]) if has_label and len(words) > 1 else None
                    elif key == "targetlabel":
                        has_label = bool(words) and words[0].lower() == "true"
                    continue
                if not in_data:
                    raise UserError(f"{path}, line {lineno}: found data before the '@data' line; a .ts file has "
                                    "'@' header lines, then '@data', then one series per line")
                parts = line.split(":")
                label = None
                if has_label:
                    if len(parts) < 2:
                        raise UserError(f"{path}, line {lineno}: expected channels then the label after ':' "
                                        "(the header says @classLabel true)")
                    label = parts.pop().strip()
                    if classes is not None and label not in classes:
                        raise UserError(f"{path}, line {lineno}: label {label[:30]!r} is not one of the classes "
                                        "in the @classLabel header")
                want = dims if dims is not None else (len(rows[0]) if rows else len(parts))
                if len(parts) != want:
                    said = "the @dimensions header says" if dims is not None else "earlier lines have"
                    raise UserError(f"{path}, line {lineno}: has {len(parts)} channel(s) but {said} {want}; "
                                    "channels are separated by ':' and the label (if any) comes last")
                chans = []
                for k, part in enumerate(parts, start=1):
                    tokens = part.split(",")
                    try:
                        vals = np.array([_parse_value(t) for t in tokens], dtype=np.float64)
                    except ValueError:
                        j, bad = next((j, t) for j, t in enumerate(tokens, start=1)
                                      if t.strip() not in _MISSING and not _is_float(t))
                        raise UserError(f"{path}, line {lineno}: channel {k}, value {j} is {bad.strip()[:30]!r}, "
                                        "not a number; values are separated by ',' and '?' marks a missing "
                                        "value") from None
                    if np.isinf(vals).any():
                        raise UserError(f"{path}, line {lineno}: channel {k} holds inf; use '?' for a missing value")
                    chans.append(vals)
                rows.append(chans)
                lines.append(lineno)
                if label is not None:
                    labels.append(label)
    except UserError:
        raise
    except (OSError, EOFError, UnicodeError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                        "check that it is a .ts or .ts.gz file") from None
    if not rows:
        raise UserError(f"{path} holds no series; a .ts file has '@' header lines, '@data', then one series "
                        "per line")
    return _pad(rows), (_labels(labels) if labels else None), lines


def read_csv_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Read a CSV of univariate series, one per row: ``(P (n, 1, Lmax) NaN-padded, labels or None, lines)``.

    Separator ',' (or ';' / tab when a line has no comma). An optional header row (any non-numeric
    field) is skipped; when its first field is ``label``, ``y``, ``class`` or ``target``, that column
    holds the labels. Empty fields, ``?`` and NaN are missing values; rows may differ in length.
    A CSV holds one channel: store multichannel data as .npy/.npz (n, c, L) or .ts.
    """
    path = Path(path)
    rows, labels, lines = [], [], []
    label_col = False
    first = True
    try:
        with _open_text(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line:
                    continue
                sep = "," if "," in line else (";" if ";" in line else ("\t" if "\t" in line else ","))
                tokens = [t.strip().strip('"') for t in line.split(sep)]
                if first:
                    first = False
                    if any(t not in _MISSING and not _is_float(t) for t in tokens):
                        label_col = tokens[0].lower() in _LABEL_COLUMNS
                        continue  # a header row
                if label_col:
                    labels.append(tokens[0])
                    tokens = tokens[1:]
                try:
                    vals = np.array([_parse_value(t) for t in tokens], dtype=np.float64)
                except ValueError:
                    j, bad = next((j, t) for j, t in enumerate(tokens, start=1)
                                  if t not in _MISSING and not _is_float(t))
                    raise UserError(f"{path}, line {lineno}: value {j} is {bad[:30]!r}, not a number; a CSV row "
                                    "holds one series (empty or '?' for a missing value; labels only in a first "
                                    "column named 'label')") from None
                if np.isinf(vals).any() or np.isnan(vals).all():
                    raise UserError(f"{path}, line {lineno}: {'inf' if np.isinf(vals).any() else 'no values'} "
                                    "in this row; a CSV row holds one series of finite numbers")
                rows.append([vals])
                lines.append(lineno)
    except UserError:
        raise
    except (OSError, EOFError, UnicodeError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                        "check that it is a CSV text file") from None
    if not rows:
        raise UserError(f"{path} holds no series; a CSV has one series per row")
    return _pad(rows), (_labels(labels) if label_col else None), lines


def read_array_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``.npy`` (X) or ``.npz`` (X under 'X' or as its only array, labels under 'y' if any); no pickle."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return _as_padded(np.load(path, allow_pickle=False), str(path)), None
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            xkey = next((k for k in ("X", "x", "data") if k in keys), keys[0] if len(keys) == 1 else None)
            if xkey is None:
                raise UserError(f"{path} holds arrays {', '.join(keys)[:80]}; name the series 'X' (and the "
                                "labels 'y') when saving with np.savez")
            X = _as_padded(f[xkey], str(path))
            y = next((f[k] for k in ("y", "labels") if k in keys), None)
    except UserError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"cannot read {path}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}; "
                        "pass a numeric array saved with np.save / np.savez (no object arrays)") from None
    if y is not None:
        if y.shape != (len(X),):
            raise UserError(f"{path}: y has shape {y.shape} for {len(X)} series; save one label per series")
        y = _labels([str(v) for v in y]) if y.dtype.kind not in "biuf" else y
    return X, y


def _read_file(path: Path):
    """(P, y, where) of one file, by its suffix; where[i] says where series i is ('FILE, line N')."""
    name = path.name.lower()
    if name.endswith((".tsv", ".tsv.gz")):
        X, y = read_ucr_file(path)
        return X.astype(np.float64)[:, None, :], y, [f"{path}, series {i + 1}" for i in range(len(X))]
    if name.endswith((".ts", ".ts.gz", ".csv", ".csv.gz")):
        P, y, lines = (read_ts_file if name.endswith((".ts", ".ts.gz")) else read_csv_file)(path)
        return P, y, [f"{path}, line {n}" for n in lines]
    if name.endswith((".npy", ".npz")):
        X, y = read_array_file(path)
        return X, y, [f"{path}, series {i + 1}" for i in range(len(X))]
    raise UserError(f"{path}: unknown data format; use UCR .tsv[.gz], UEA/sktime .ts[.gz], .npy, .npz or .csv")


def _concat(parts, source: str):
    """Stack the (P, y, lines) of several files (the splits of one dataset)."""
    if len(parts) == 1:
        return parts[0]
    chans = {p[0].shape[1] for p in parts}
    if len(chans) > 1:
        raise UserError(f"{source}: the files have {' and '.join(map(str, sorted(chans)))} channels; the splits "
                        "of one dataset have the same number of channels")
    lmax = max(p[0].shape[2] for p in parts)
    P = np.concatenate([np.pad(p[0], ((0, 0), (0, 0), (0, lmax - p[0].shape[2])), constant_values=np.nan)
                        for p in parts])
    ys = [p[1] for p in parts]
    if any(y is None for y in ys):
        y = None
    elif len({y.dtype.kind for y in ys}) > 1:
        y = np.concatenate([y.astype(np.float64 if all(v.dtype.kind in "if" for v in ys) else str) for y in ys])
    else:
        y = np.concatenate(ys)
    return P, y, [w for p in parts for w in p[2]]


def _find(target: Path, raw: str, split: str | None) -> tuple[list[Path], str]:
    """The file(s) a path or dataset name stands for, and a short source description."""
    if target.is_file():
        return [target], str(target)
    looked: list[str] = []
    found = None
    if target.is_dir():
        name = _dataset_name_in(target, _DATA_SUFFIXES)
        if name is not None:
            found = (target, name)
        else:
            files = sorted(p for p in target.iterdir() if p.is_file() and p.name.lower().endswith(_FILE_SUFFIXES))
            if len(files) == 1:
                return files, str(files[0])
            if files:
                raise UserError(f"{target} holds several data files ({', '.join(p.name for p in files[:4])}); "
                                "pass one file, or name them NAME_TRAIN / NAME_TEST")
            raise UserError(f"{target} holds no data file (NAME_TRAIN/NAME_TEST .tsv[.gz] or .ts[.gz], or one "
                            ".npy, .npz or .csv file); pass a data file or its folder")
    else:
        looked.append(f"{target.absolute()} (no such file or folder)")
        if raw == target.name:  # a bare name: look it up in $XDREAM_TS_DATA
            folders = _search_folders()
            if not folders:
                looked.append(f"${ENV_VAR} (not set)")
            for folder in folders:
                for cand in (folder / raw, folder):
                    if cand.is_dir() and any(_split_file(cand, raw, s, _DATA_SUFFIXES) for s in SPLITS):
                        found = (cand, raw)
                        break
                    looked.append(f"{cand}/{raw}_TRAIN|TEST.tsv|ts[.gz]")
                if found:
                    break
    if found is None:
        raise UserError(f"data {raw!r} not found; looked in: {'; '.join(looked)}. Pass a data file or folder, or "
                        f"set {ENV_VAR} to the folder(s) holding your datasets")
    folder, name = found
    wanted = [split] if split else list(SPLITS)
    paths = [p for s in wanted if (p := _split_file(folder, name, s, _DATA_SUFFIXES)) is not None]
    if not paths:
        raise UserError(f"{folder} has no {name}_{split.upper()} file (.tsv[.gz] or .ts[.gz]); pass "
                        f"split='{'test' if split == 'train' else 'train'}' or split=None")
    what = "+".join(p.name.rsplit("_", 1)[1].split(".")[0].lower() for p in paths)
    return paths, f"{folder / name} ({what})"


def load_dataset(path: str | os.PathLike, length: int | None = None, split: str | None = None) -> Dataset:
    """Read the user's real series from a file, a folder or a dataset name, in any supported format.

    path: one file, by its suffix:
        ``.tsv[.gz]``  UCR archive: label first, tab separated (see ``load_ucr``);
        ``.ts[.gz]``   UEA/sktime: ``@`` headers, ``:`` between channels, ``?`` missing (multivariate,
                       variable length); see ``read_ts_file``;
        ``.npy``       X shaped (n, L) or (n, c, L), NaN for missing values / end padding;
        ``.npz``       X under the key 'X' (or its only array), optional labels under 'y';
        ``.csv[.gz]``  one univariate series per row (see ``read_csv_file``; multichannel data: use
                       .npy/.npz or .ts);
      or a folder holding ``NAME_TRAIN`` / ``NAME_TEST`` ``.tsv[.gz]`` or ``.ts[.gz]`` files (or a single
      data file), or a bare dataset NAME looked up in ``$XDREAM_TS_DATA`` as ``load_ucr`` does.
    length: the model's series length. Every series (and channel) is resampled from its observed length
      to it (linear interpolation); None keeps the data's length, or the longest when lengths differ.
    split: for a NAME_TRAIN/NAME_TEST pair, 'train', 'test', or None for both (train first).

    Returns a :class:`Dataset` (X float32 (n, c, L), always three axes). What the loader changed is in
    ``Dataset.notes``, one line each, for the caller to say once. Malformed files raise ``UserError``
    naming the file, the line and what was expected.
    """
    split = _check_split(split)
    if length is not None and int(length) < 1:
        raise UserError(f"length={length}; pass a positive series length")
    target = Path(path).expanduser()
    files, source = _find(target, str(path), split)
    parts = [_read_file(p) for p in files]
    P, y, lines = _concat(parts, source)
    folder = files[0].parent
    return _assemble(P, y, source, length, lines=lines, folder=folder)


__all__ = ["UCRData", "load_ucr", "read_ucr_file", "ENV_VAR", "Dataset", "load_dataset", "read_ts_file",
           "read_csv_file", "read_array_file", "ZNORM_TOL"]
