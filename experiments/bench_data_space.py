"""Benchmark of issue 15 item 7: does the model's own data make a better stimulus space?

Five small models, trained here on data in ``../shared/data`` (CPU, seconds each, fixed seeds) and exported
to ONNX (``experiments/models/data_space/``, each well under 1 MB; the script retrains one only when its
file is missing, or with ``--retrain``):

  jv_cnn       JapaneseVowels (UEA, 12 channels, raw LPC units, lengths 7-29 resampled to 29): a 3-layer
               CNN (16-32-32 channels) whose input standardisation (per-channel mean/std of TRAIN) is
               INSIDE the exported graph, so the model takes raw units
  pickup_gru   PickupGestureWiimoteZ (UEA, univariate, not z-normalised, lengths 29-361 resampled to 64):
               a GRU (hidden 32) + ReLU layer + linear, global input standardisation inside the graph
  gunpoint_cnn GunPoint (UCR, z-normalised, length 150): a 3-layer CNN (16-32-32)
  italy_gru    ItalyPowerDemand (UCR, z-normalised, length 24): a GRU (hidden 16) + ReLU layer + linear
  ecg200_lr    ECG200 (UCR, z-normalised, length 96): scikit-learn LogisticRegression exported by
               skl2onnx with default options (ZipMap on: the probabilities are a sequence of maps)

For every chosen unit (logits plus hidden ReLU units, "center" or "mean" position; only *live* units, those
whose best response over the TRAIN data is > 0) one search per decoder and seed with the default optimizer:

  auto+data   TargetSpec(data=TRAIN file): the decoder is fitted on the data (whitened PCA, 99 % variance,
              cap 64, plus 64 low-frequency directions outside its span) in the data's stimulus space (raw
              units for jv/pickup), starting from the encoded best real series; reference = best real
              response (run.reference_max)
  learned     `xdream-ts train-decoder --data TRAIN --length L` (the hybrid decoder, xdream_ts/decoders/hybrid.py:
              the same auto PCA + a learned conv-VAE residual branch, in the data's stimulus space; trained
              once per model, cached under experiments/models/data_space/<model>_learned/), searched as
              `--decoder DIR --data TRAIN`: start from the encoded best real series, reference = best real
  auto        TargetSpec without data: the shipped prior (the VAE; for 12 channels one VAE code per
              channel, xdream_ts/decoders/channelwise.py); z-normalised stimuli
  pca16       PCADecoder.fit(TRAIN, n_components=16): a plain z-normalised PCA (the `pca:DATA` of before the
              data space), searched without data (random start)
  basis       DCT basis (32 components or fewer), z-normalised, without data
  identity    raw samples, z-normalised, without data

All searches without data are given reference_max = the same best real response, so the ratios compare.
Those searches live in z-normalised space; for the raw-unit models (jv_cnn, pickup_gru) that is not the
space the model was trained on, which is part of what is measured.

    .venv/bin/python experiments/bench_data_space.py --quick   # 1 seed, 2 units/model, budget 600
    .venv/bin/python experiments/bench_data_space.py           # 2 seeds, all units, budget 3000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from machine import machine_lines  # noqa: E402
SHARED = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else REPO.parent / "shared" / "data"
MODELS = REPO / "experiments" / "models" / "data_space"
RESULTS = REPO / "experiments" / "results"

UCR = SHARED / "ucr"
UEA = SHARED / "uea"
DATA = {
    "jv_cnn": (UEA / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts.gz", UEA / "JapaneseVowels" / "JapaneseVowels_TEST.ts.gz", 29),
    "pickup_gru": (UEA / "PickupGestureWiimoteZ" / "PickupGestureWiimoteZ_TRAIN.ts.gz",
                   UEA / "PickupGestureWiimoteZ" / "PickupGestureWiimoteZ_TEST.ts.gz", 64),
    "gunpoint_cnn": (UCR / "GunPoint" / "GunPoint_TRAIN.tsv.gz", UCR / "GunPoint" / "GunPoint_TEST.tsv.gz", 150),
    "italy_gru": (UCR / "ItalyPowerDemand" / "ItalyPowerDemand_TRAIN.tsv.gz",
                  UCR / "ItalyPowerDemand" / "ItalyPowerDemand_TEST.tsv.gz", 24),
    "ecg200_lr": (UCR / "ECG200" / "ECG200_TRAIN.tsv.gz", UCR / "ECG200" / "ECG200_TEST.tsv.gz", 96),
}


# ---------------------------------------------------------------------------------------------- training
def _labels(y):
    classes = np.unique(y)
    return np.searchsorted(classes, y), len(classes)


def _torch_models():
    import torch
    import torch.nn as nn

    class Standardise(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean) / self.std

    class CNN(nn.Module):
        def __init__(self, cin, n_classes, mean=0.0, std=1.0):
            super().__init__()
            self.std_in = Standardise(mean, std)
            self.conv1, self.relu1 = nn.Conv1d(cin, 16, 5, padding=2), nn.ReLU()
            self.conv2, self.relu2 = nn.Conv1d(16, 32, 5, padding=2), nn.ReLU()
            self.conv3, self.relu3 = nn.Conv1d(32, 32, 3, padding=1), nn.ReLU()
            self.fc = nn.Linear(32, n_classes)

        def forward(self, x):
            h = self.relu1(self.conv1(self.std_in(x)))
            h = self.relu2(self.conv2(h))
            h = self.relu3(self.conv3(h))
            return self.fc(h.mean(-1))

    class GRUNet(nn.Module):
        def __init__(self, n_classes, hidden, mean=0.0, std=1.0):
            super().__init__()
            self.std_in = Standardise(mean, std)
            self.gru = nn.GRU(1, hidden, batch_first=True)
            self.hidden, self.relu = nn.Linear(hidden, 32), nn.ReLU()
            self.fc = nn.Linear(32, n_classes)

        def forward(self, x):  # x (n, 1, L)
            out, _ = self.gru(self.std_in(x).transpose(1, 2))
            return self.fc(self.relu(self.hidden(out[:, -1])))

    return CNN, GRUNet


def _fit_torch(model, X, y, epochs, lr=3e-3, seed=0, batch=32):
    import torch
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(Xt), generator=g)
        for i in range(0, len(Xt), batch):
            b = perm[i:i + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xt[b]), yt[b])
            loss.backward()
            opt.step()
    model.eval()
    return model


def _accuracy_torch(model, X, y):
    import torch
    with torch.no_grad():
        return float((model(torch.as_tensor(X, dtype=torch.float32)).argmax(1).numpy() == y).mean())


def _export_torch(model, channels, length, path):
    import torch
    torch.onnx.export(model, torch.zeros(2, channels, length), str(path), input_names=["series"],
                      output_names=["logits"], dynamic_axes={"series": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False, opset_version=17)


def train_models(retrain=False) -> dict:
    """Train (when missing) and export the five models; returns {name: info} (also written as models.json)."""
    import torch
    from xdream_ts.data import load_dataset
    torch.set_num_threads(1)
    MODELS.mkdir(parents=True, exist_ok=True)
    info_path = MODELS / "models.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    CNN, GRUNet = _torch_models()
    for name, (train, test, L) in DATA.items():
        path = MODELS / (name + ".onnx")
        if path.is_file() and not retrain and name in info:
            continue
        t0 = time.perf_counter()
        tr, te = load_dataset(train, length=L), load_dataset(test, length=L)
        ytr, k = _labels(tr.y)
        yte = np.searchsorted(np.unique(tr.y), te.y)
        if name == "ecg200_lr":
            from skl2onnx import to_onnx
            from sklearn.linear_model import LogisticRegression
            clf = LogisticRegression(max_iter=2000, C=1.0, random_state=0).fit(tr.squeeze(), ytr)
            acc = float((clf.predict(te.squeeze()) == yte).mean())
            onx = to_onnx(clf, tr.squeeze()[:1].astype(np.float32))  # default options: ZipMap on
            path.write_bytes(onx.SerializeToString())
            how = "LogisticRegression(max_iter=2000, C=1), skl2onnx.to_onnx with default options"
        else:
            torch.manual_seed(0)
            if name in ("jv_cnn", "pickup_gru"):  # raw units: the standardisation is part of the model
                if tr.channels > 1:
                    mean = tr.X.mean(axis=(0, 2)).reshape(1, -1, 1)
                    std = tr.X.std(axis=(0, 2)).reshape(1, -1, 1)
                else:
                    mean, std = float(tr.X.mean()), float(tr.X.std())
            else:
                mean, std = 0.0, 1.0
            if name.endswith("_cnn"):
                model = CNN(tr.channels, k, mean, std)
                epochs = 80 if name == "jv_cnn" else 150
            else:
                model = GRUNet(k, 32 if name == "pickup_gru" else 16, mean, std)
                epochs = 150 if name == "pickup_gru" else 60
            _fit_torch(model, tr.X, ytr, epochs=epochs, seed=0)
            acc = _accuracy_torch(model, te.X, yte)
            _export_torch(model, tr.channels, L, path)
            how = (f"{type(model).__name__}, Adam lr 3e-3 wd 1e-4, batch 32, {epochs} epochs, seed 0, "
                   f"input standardisation in the graph: {'per channel' if tr.channels > 1 else 'global'} "
                   f"{'TRAIN mean/std' if name in ('jv_cnn', 'pickup_gru') else 'identity (data z-normalised)'}")
        info[name] = {"train": str(train.relative_to(SHARED.parent)), "length": L, "channels": tr.channels,
                      "classes": int(k), "n_train": tr.n, "test_accuracy": round(acc, 3),
                      "train_seconds": round(time.perf_counter() - t0, 1), "how": how,
                      "size_kb": round(path.stat().st_size / 1024, 1), "znormalized_data": bool(tr.znormalized)}
        print(f"trained {name}: test accuracy {acc:.3f}, {info[name]['train_seconds']} s, "
              f"{info[name]['size_kb']} kB", flush=True)
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    return info


# ---------------------------------------------------------------------------------------------- units
# logits first, then hidden ReLU units; the quick mode takes the first two of each model
UNITS = {
    "jv_cnn": ["logits:0@center", "/relu3/Relu_output_0:0@center", "logits:3@center", "/relu2/Relu_output_0:1@center"],
    "pickup_gru": ["logits:0@center", "/relu/Relu_output_0:0@center", "logits:4@center", "/relu/Relu_output_0:1@center"],
    "gunpoint_cnn": ["logits:1@center", "/relu3/Relu_output_0:0@center", "logits:0@center", "/relu2/Relu_output_0:2@center"],
    "italy_gru": ["logits:0@center", "/relu/Relu_output_0:0@center", "logits:1@center", "/relu/Relu_output_0:1@center"],
    "ecg200_lr": ["probabilities:1@center", "probabilities:0@center"],
}
# candidates in order; the first live ones are used (quick: 2 per model, full: 6; ecg200_lr has only 2)
CANDIDATES = {
    "jv_cnn": ["logits:0@center", "/relu3/Relu_output_0:0@center", "logits:3@center", "/relu2/Relu_output_0:1@mean",
               "/relu3/Relu_output_0:1@center", "/relu2/Relu_output_0:2@mean", "/relu3/Relu_output_0:2@center"],
    "pickup_gru": ["logits:0@center", "/relu/Relu_output_0:0@center", "logits:4@center",
                   "/gru/Transpose_1_output_0:0@mean", "/relu/Relu_output_0:1@center",
                   "/relu/Relu_output_0:2@center", "/gru/Transpose_1_output_0:1@mean"],
    "gunpoint_cnn": ["logits:1@center", "/relu3/Relu_output_0:0@center", "logits:0@center",
                     "/relu2/Relu_output_0:1@mean", "/relu3/Relu_output_0:1@center", "/relu2/Relu_output_0:2@mean",
                     "/relu3/Relu_output_0:2@center"],
    "italy_gru": ["logits:0@center", "/relu/Relu_output_0:0@center", "logits:1@center",
                  "/gru/Transpose_1_output_0:0@mean", "/relu/Relu_output_0:1@center",
                  "/relu/Relu_output_0:2@center", "/gru/Transpose_1_output_0:1@mean"],
    "ecg200_lr": ["probabilities_logits:1@center", "probabilities_logits:0@center"],
}
DECODERS = ["auto+data", "learned", "auto", "pca16", "basis", "identity", "auto+data r=start"]
# "auto+data r=start" is a diagnostic, not a decoder: auto+data with the default optimizer's sphere radius set
# to the norm of the best encoded real series (optimizer_params={"radius": ...}) instead of its fixed
# 0.5 * sqrt(d), which is 2-4x smaller than the norms the real series encode to (see "What we saw")


def train_learned(name) -> dict:
    """The learned decoder of a model, trained by the CLI as a user would (its folder is reused when the
    data and parameters are unchanged: train-decoder skips the training then); returns its decoder.json."""
    import subprocess
    train, _, L = DATA[name]
    folder = MODELS / f"{name}_learned"
    cmd = [sys.executable, "-m", "xdream_ts.train_decoder", "--data", str(train), "--out", str(folder),
           "--length", str(L), "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"train-decoder failed for {name}: {done.stderr.strip()[-400:]}")
    print(f"{name}: {done.stdout.strip()} [{time.perf_counter() - t0:.0f} s]", flush=True)
    return json.loads((folder / "decoder.json").read_text())


def choose_units(name, n_units):
    """(live units to use, [(unit, best real) of every candidate looked at])"""
    from xdream_ts.targets import TargetSpec, build
    path, (train, _, _) = MODELS / f"{name}.onnx", DATA[name]
    live, seen = [], []
    for u in CANDIDATES[name]:
        built = build(TargetSpec(model=str(path), units=[u], data=str(train)))
        best = float(np.nanmax(built.real_scores))
        seen.append((u, best))
        if best > 0:
            live.append((u, best))
        if len(live) == n_units:
            break
    return live, seen


def one_run(name, unit, best_real, decoder, seed, budget, pca_cache):
    import xdream_ts
    from xdream_ts.data import load_dataset
    from xdream_ts.decoders.pca import PCADecoder
    from xdream_ts.targets import TargetSpec
    path, (train, _, L) = MODELS / f"{name}.onnx", DATA[name]
    t0 = time.perf_counter()
    extra = {}
    if decoder == "learned":
        spec = TargetSpec(model=str(path), units=[unit], data=str(train))
        r = xdream_ts.run(decoder=str(MODELS / f"{name}_learned"), scorer=spec, optimizer="default", budget=budget,
                          seed=seed, progress=False, store=None)
        d = load_dataset(train, length=L)
        extra["data_range"] = [float(d.X.min()), float(d.X.max())]
    elif decoder.startswith("auto+data"):
        spec = TargetSpec(model=str(path), units=[unit], data=str(train))
        params = None
        if decoder == "auto+data r=start":
            from xdream_ts.loop import prepare
            from xdream_ts.targets import build
            _, p, _ = prepare(build(spec), "auto", "default", None, None, seed=seed)
            params = {"radius": float(np.linalg.norm(p["init"][0]))}
            extra["radius"] = params["radius"]
        r = xdream_ts.run(decoder="auto", scorer=spec, optimizer="default", budget=budget, seed=seed, progress=False,
                          store=None, optimizer_params=params)
        d = load_dataset(train, length=L)
        extra["data_range"] = [float(d.X.min()), float(d.X.max())]
    else:
        spec = TargetSpec(model=str(path), units=[unit])
        dec = decoder
        if decoder == "pca16":
            if name not in pca_cache:
                pca_cache[name] = PCADecoder.fit(load_dataset(train, length=L).squeeze(), n_components=16)
            dec = pca_cache[name]
        r = xdream_ts.run(decoder=dec, scorer=spec, optimizer="default", budget=budget, seed=seed, progress=False,
                          store=None, reference_max=best_real)
    rel = r.relative_activation
    per_gen = r.best_per_generation
    cfg = r.config or {}
    best_series = np.asarray(r.series[r.best_index]) if hasattr(r, "series") else None
    out = {"model": name, "unit": unit, "decoder": decoder, "seed": seed, "budget": budget,
           "best_real": best_real, "reference_max": r.reference_max, "best": float(r.best_score),
           "relative": None if rel is None else float(rel),
           "start_relative": float(per_gen[0] / best_real),
           "space": (cfg.get("data") or {}).get("space", "znorm"),
           "wall_s": round(time.perf_counter() - t0, 2), **extra}
    if best_series is not None:
        out["best_series_range"] = [float(best_series.min()), float(best_series.max())]
    return out


# ---------------------------------------------------------------------------------------------- report
def summarise(rows, units_by_model):
    """{(model, decoder): {...}} over the units each model uses; a unit's value is its median over seeds."""
    table = {}
    for name, units in units_by_model.items():
        for d in DECODERS:
            per_unit = {}
            for u, _ in units:
                vals = [r["relative"] for r in rows if r["model"] == name and r["unit"] == u and r["decoder"] == d]
                if vals:
                    per_unit[u] = vals
            if not per_unit:
                continue
            runs = [v for vs in per_unit.values() for v in vs]
            table[(name, d)] = {
                "units": len(per_unit),
                "super_units": sum(1 for vs in per_unit.values() if np.median(vs) > 1),
                "super_runs": sum(1 for v in runs if v > 1), "runs": len(runs),
                "median": float(np.median([np.median(vs) for vs in per_unit.values()])),
                "per_unit": {u: float(np.median(vs)) for u, vs in per_unit.items()},
            }
    return table


def write_report(path, rows, units_by_model, seen_by_model, models, args, command, wall, complete):
    table = summarise(rows, units_by_model)
    L = [f"# The model's own data as the stimulus space (issue 15, item 7){'' if args.quick is False else ' — quick mode'}",
         "", f"Command: `{command}`" + ("" if complete else "  **(incomplete: the run had not finished; rows so far)**"),
         "", *machine_lines(torch=True, lscpu=True), "",
         f"Budget {args.budget} presentations per run, seeds {list(range(args.seeds))}, optimizer `default`, "
         f"{sum(len(v) for v in units_by_model.values())} units, {len(rows)} runs, {wall / 60:.1f} min.", "",
         "## Models (trained by this script, CPU, fixed seed 0; ONNX under experiments/models/data_space/)", "",
         "| model | data | channels x length | z-normalised data | classes | test acc. | size | how |",
         "|---|---|---|---|---|---|---|---|"]
    for n, m in models.items():
        L.append(f"| {n} | {m['train']} | {m['channels']} x {m['length']} | {m['znormalized_data']} | {m['classes']} | "
                 f"{m['test_accuracy']} | {m['size_kb']} kB | {m['how']} |")
    learned = getattr(args, "learned_info", {})
    if learned:
        L += ["", "Learned decoders (`train-decoder`, 1 torch thread; fraction of the variance of held-out, "
              "time-warped TRAIN series each part leaves unexplained):", "",
              "| model | code | space | training | PCA alone leaves | hybrid leaves |", "|---|---|---|---|---|---|"]
        for n, info in learned.items():
            t = info["training"]
            L.append(f"| {n} | {info['architecture']['code']} | {info['space']['kind']} | {t['seconds']:.0f} s | "
                     f"{t['pca_fraction_unexplained']:.4f} | {t['hybrid_fraction_unexplained']:.4f} |")
    L += ["", "## Decoders", "",
          "- **auto+data**: `TargetSpec(data=TRAIN file)`: the fitted auto PCA (whitened, 99 % variance, cap 64) plus "
          "64 low-frequency directions outside its span (`PCADecoder.with_residual`), in "
          "the data's stimulus space (raw units for jv_cnn and pickup_gru, z-normalised for the UCR sets), first "
          "generation from the encoded best real series; reference = best real response over TRAIN.",
          "- **learned**: `xdream-ts train-decoder --data TRAIN --length L` (the hybrid decoder, "
          "`xdream_ts/decoders/hybrid.py`): code = [the auto PCA's part | 16 learned dimensions], series = the same "
          "auto PCA + a small conv-VAE decoder trained on what the PCA leaves of time-warped TRAIN series (0 where "
          "the learned part is 0, so its search space contains auto+data's), in the data's stimulus space inside the "
          "exported ONNX graph; searched as `--decoder DIR --data TRAIN` (start from the encoded best real series, "
          "reference = best real response). Trained once per model (cached beside the models).",
          "- **auto**: no data: the shipped prior (the VAE); for jv_cnn (12 channels) one VAE code per channel "
          "(`xdream_ts/decoders/channelwise.py`). Searches z-normalised series.",
          "- **pca16**: `PCADecoder.fit(TRAIN, n_components=16)` (plain z-normalised PCA, fixed 16 components, "
          "distinct from the auto PCA), searched without data (random start). Z-normalised series.",
          "- **basis**, **identity**: no data; z-normalised series.",
          "- All runs without data get `reference_max` = the same best real response, so every ratio is "
          "best found / best real series (> 1: a super stimulus). For the raw-unit models the z-normalised "
          "searches feed the model series it never saw in training scale (the model standardises internally "
          "with the TRAIN per-channel mean/std); that is part of the finding, not a bug of the benchmark.", "",
          "## Units", "",
          "Live = best response over the TRAIN series > 0. Candidates looked at, in order (best real response):", ""]
    for n, seen in seen_by_model.items():
        used = {u for u, _ in units_by_model[n]}
        L.append(f"- {n}: " + ", ".join(f"`{u}` {b:.3g}{'' if u in used else (' (dead)' if b <= 0 else ' (not used)')}"
                                         for u, b in seen))
    L += ["", "## Results", "",
          "Super stimuli: units whose median relative activation over seeds is > 1 (and runs > 1 of all runs); "
          "median: over units of the per-unit median over seeds.", "",
          "| model | decoder | space | live units | super stimuli (units) | share | runs > 1 | median rel. act. |",
          "|---|---|---|---|---|---|---|---|"]
    for n in units_by_model:
        for d in DECODERS:
            t = table.get((n, d))
            if t is None:
                continue
            space = next((r["space"] for r in rows if r["model"] == n and r["decoder"] == d), "?")
            L.append(f"| {n} | {d} | {space} | {t['units']} | {t['super_units']} | {t['super_units'] / t['units']:.0%} | "
                     f"{t['super_runs']}/{t['runs']} | {t['median']:.3f} |")
    L += ["", "## Targets", ""]
    all_ok = True
    for variant in ("auto+data", "auto+data r=start"):
        L.append(f"**{variant}**" + ("" if variant == "auto+data" else " (the diagnostic: what the targets would be "
                                     "with the optimizer's sphere at the start code's norm)") + ":")
        L.append("")
        for n in units_by_model:
            t = table.get((n, variant))
            if t is None:
                continue
            share = t["super_units"] / t["units"]
            rivals = [(d, table[(n, d)]["median"]) for d in ("pca16", "auto") if (n, d) in table]
            better = max(rivals, key=lambda x: x[1]) if rivals else ("-", float("nan"))
            ok1, ok2 = share >= 0.95, t["median"] >= better[1]
            if variant == "auto+data":
                all_ok &= ok1 and ok2
            L.append(f"- {n}: super stimuli on {t['super_units']}/{t['units']} live units ({share:.0%}): "
                     f"{'holds' if ok1 else 'FAILS'} (>= 95 %); median {t['median']:.3f} vs the better of pca16 and "
                     f"the shipped prior ({better[0]} {better[1]:.3f}): {'holds' if ok2 else 'FAILS'}")
        L.append("")
    L += ["**learned** (`train-decoder`) against **auto+data** (the PCA it must match: as many super stimuli and a "
          "median relative activation at least auto+data's, on the same units):", ""]
    learned_ok = None
    for n in units_by_model:
        t, p = table.get((n, "learned")), table.get((n, "auto+data"))
        if t is None or p is None:
            continue
        ok1, ok2 = t["super_units"] >= p["super_units"], t["median"] >= p["median"]
        learned_ok = (learned_ok is not False) and ok1 and ok2
        L.append(f"- {n}: super stimuli {t['super_units']}/{t['units']} vs {p['super_units']}/{p['units']}: "
                 f"{'holds' if ok1 else 'FAILS'}; median {t['median']:.3f} vs {p['median']:.3f} "
                 f"({t['median'] / p['median']:.3f}x): {'holds' if ok2 else 'FAILS'}")
    if learned_ok is not None:
        verdict = "holds on every model" if learned_ok else "does NOT hold on every model (see above)"
        L += ["", f"The learned decoder >= PCA: {verdict}.", ""]
    L += [f"Overall (auto+data as shipped): {'both targets hold on every model' if all_ok else 'the targets do NOT all hold (see above)'}.",
          "", "## Per unit (median relative activation over seeds)", "",
          "| model | unit | best real | " + " | ".join(DECODERS) + " | auto+data start |",
          "|---|---|---|" + "---|" * (len(DECODERS) + 1)]
    for n, units in units_by_model.items():
        for u, b in units:
            cells = []
            for d in DECODERS:
                v = table.get((n, d), {}).get("per_unit", {}).get(u)
                cells.append("-" if v is None else f"{v:.3f}")
            st = [r["start_relative"] for r in rows if r["model"] == n and r["unit"] == u and r["decoder"] == "auto+data"]
            L.append(f"| {n} | `{u}` | {b:.3g} | " + " | ".join(cells) + f" | {np.median(st):.3f} |" if st else
                     f"| {n} | `{u}` | {b:.3g} | " + " | ".join(cells) + " | - |")
    L += ["", "`auto+data start`: best of the first generation / best real (1.0 = the encoded best real series "
          "reproduces its response).", ""]
    L += ["## Stimulus range (best series of each run; min to max over runs)", "",
          "| model | data range (TRAIN) | " + " | ".join(DECODERS) + " |", "|---|---|" + "---|" * len(DECODERS)]
    for n in units_by_model:
        dr = next((r["data_range"] for r in rows if r["model"] == n and "data_range" in r), None)
        cells = []
        for d in DECODERS:
            rr = [r["best_series_range"] for r in rows if r["model"] == n and r["decoder"] == d and "best_series_range" in r]
            cells.append(f"{min(a for a, _ in rr):.3g} to {max(b for _, b in rr):.3g}" if rr else "-")
        L.append(f"| {n} | {'-' if dr is None else f'{dr[0]:.3g} to {dr[1]:.3g}'} | " + " | ".join(cells) + " |")
    L.append("")
    if args.notes and Path(args.notes).is_file():
        L += ["## What we saw", "", Path(args.notes).read_text().strip(), ""]
    Path(path).write_text("\n".join(L) + "\n")
    Path(path).with_suffix(".json").write_text(json.dumps(rows, indent=0) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 units per model, budget 600")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--units", type=int, default=None, help="live units per model")
    ap.add_argument("--models", default=",".join(DATA))
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--notes", default=None, help="a markdown file appended as 'What we saw'")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.budget = args.budget or (600 if args.quick else 3000)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.units = args.units or (2 if args.quick else 6)
    out = Path(args.out or RESULTS / ("data_space_quick.md" if args.quick else "data_space.md"))
    command = "cd /work/main && .venv/bin/python experiments/bench_data_space.py " + " ".join(argv or sys.argv[1:])
    import torch
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    models = {k: v for k, v in train_models(args.retrain).items() if k in args.models.split(",")}
    args.learned_info = {n: train_learned(n) for n in models}
    units_by_model, seen_by_model = {}, {}
    for n in models:
        units_by_model[n], seen_by_model[n] = choose_units(n, args.units)
    rows, pca_cache = [], {}
    total = sum(len(u) for u in units_by_model.values()) * len(DECODERS) * args.seeds
    for n, units in units_by_model.items():
        for u, best in units:
            for d in DECODERS:
                for s in range(args.seeds):
                    try:
                        r = one_run(n, u, best, d, s, args.budget, pca_cache)
                    except Exception as e:  # noqa: BLE001 - a library failure is a finding: record it, go on
                        import traceback
                        traceback.print_exc()
                        r = {"model": n, "unit": u, "decoder": d, "seed": s, "error": f"{type(e).__name__}: {e}",
                             "relative": None, "start_relative": float("nan"), "space": "?"}
                    if r.get("relative") is not None:
                        rows.append(r)
                    else:
                        print("NO RESULT", r, flush=True)
                    print(f"[{len(rows)}/{total}] {n} {u} {d} seed {s}: rel {r.get('relative')} "
                          f"({r.get('wall_s')} s, {(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
            write_report(out, rows, units_by_model, seen_by_model, models, args, command,
                         time.perf_counter() - t0, complete=False)
    write_report(out, rows, units_by_model, seen_by_model, models, args, command, time.perf_counter() - t0,
                 complete=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
