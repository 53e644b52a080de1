"""Probe a model nobody here trained: the pre-trained FordA FCN of danelee2601/supervised-FCN (MIT).

The checkpoint (``../shared/models/third_party/supervised-fcn/FordA.ckpt``, a torch state_dict) is
exported to ONNX here, then treated as a black box: ``inspect_model`` lists its tensors, and the same
search as the demo (XDream's GA and the default optimizer, same decoder and budget) runs on units of its
three ReLU layers at the centre time step and on a logit. Relative activation uses the unit's maximum
over all 4921 FordA series (train + test), scored by the same ONNX scorer, in the model's own input
scale (the FCN was trained on series scaled by one global mean/std of TRAIN, which for FordA is
mean ~0, std 0.999: the z-normalised series are used as they are, divided by that std).

    python experiments/third_party_fcn.py [--budget 1500] [--out experiments/results/third_party_fcn.md]

Writes the result table (committed); the weights are never committed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TRAIN_STD = 0.99900  # global std of the FordA TRAIN matrix (mean -8e-12), the FCN's training scale


def build_fcn(n_classes: int = 2):
    """Wang et al. 2017 FCN with supervised-FCN's state_dict keys and TF-style 'same' padding."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, k):
            super().__init__()
            self.k = k
            self.layers = nn.Sequential(nn.Conv1d(cin, cout, k), nn.BatchNorm1d(cout), nn.ReLU())

        def forward(self, x):
            left = (self.k - 1) // 2  # for an even kernel TensorFlow puts the extra zero on the right
            return self.layers(F.pad(x, (left, self.k - 1 - left)))

    class FCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(Block(1, 128, 8), Block(128, 256, 5), Block(256, 128, 3))
            self.final = nn.Linear(128, n_classes)

        def forward(self, x):
            # the input scale of training folded into the graph: the searched series stay z-normalised
            return self.final(self.layers(x / TRAIN_STD).mean(-1))

    return FCN()


def export(ckpt: Path, out: Path) -> Path:
    import torch
    model = build_fcn()
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    model.eval()
    torch.onnx.export(model, torch.randn(2, 1, 500), str(out), input_names=["series"], output_names=["logits"],
                      dynamic_axes={"series": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=1500)
    ap.add_argument("--units", type=int, default=2, help="units per ReLU layer")
    ap.add_argument("--out", default=str(REPO / "experiments" / "results" / "third_party_fcn.md"))
    ap.add_argument("--workdir", default=str(REPO / "experiments" / "_work" / "third_party"))
    args = ap.parse_args(argv)

    import xdream_ts
    from xdream_ts.adapters.onnx import OnnxScorer, Target, inspect_model
    from xdream_ts.decoders import default_decoder_spec
    from xdream_ts.data import load_ucr
    from xdream_ts.decoders import make_decoder

    ckpt = SHARED / "models" / "third_party" / "supervised-fcn" / "FordA.ckpt"
    if not ckpt.is_file():
        print(f"needs {ckpt} (../shared)", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = export(ckpt, work / "forda_fcn.onnx")
    info = inspect_model(path)
    relus = [t["name"] for t in info["tensors"] if t["op"] == "Relu"]
    rng = np.random.default_rng(0)
    targets = []
    for name, t in zip(relus, [t for t in info["tensors"] if t["op"] == "Relu"]):
        targets += [Target(name, int(c), "center") for c in np.sort(rng.choice(t["units"], args.units, replace=False))]
    targets.append(Target(None, 1))  # logit of FordA class 1

    data = load_ucr(SHARED / "data" / "ucr" / "FordA")
    X = np.concatenate([data.X_train, data.X_test]).astype(np.float32)
    everything = OnnxScorer(path, targets)
    t0 = time.perf_counter()
    ref = np.concatenate([everything(X[i:i + 256]) for i in range(0, len(X), 256)]).max(axis=0)
    t_ref = time.perf_counter() - t0
    y = np.concatenate([data.y_train, data.y_test]) > 0
    logits = OnnxScorer(path, [Target(None, 0), Target(None, 1)])(data.X_test)
    acc = float(((logits[:, 1] > logits[:, 0]) == (data.y_test > 0)).mean())

    spec = default_decoder_spec()
    decoder = make_decoder(spec, length=500)
    rows = []
    for k, target in enumerate(targets):
        scorer = OnnxScorer(path, target)
        for opt in ("genetic", "default"):
            store = work / f"{str(target).replace('/', '_').replace(':', '-')}-{opt}.zarr"
            if store.exists():
                import shutil
                shutil.rmtree(store)
            t0 = time.perf_counter()
            r = xdream_ts.run(decoder, scorer, opt, budget=args.budget, seed=0, store=store, progress=False,
                              reference_max=float(ref[k]))
            rows.append((str(target) if target.layer else "logits:1", opt, float(ref[k]), r.best_score,
                         r.relative_activation, r.presentations, time.perf_counter() - t0))
            print(rows[-1], flush=True)

    lines = [
        "# A model nobody here trained: the supervised-FCN FordA checkpoint, probed as a black box",
        "",
        f"Date {dt.date.today()}; machine: {platform.machine()}, {_cpu()}, 2 cores shared with other work; no GPU.",
        f"Command: `python experiments/third_party_fcn.py --budget {args.budget} --units {args.units}`",
        "",
        f"Exported from `../shared/models/third_party/supervised-fcn/FordA.ckpt` (MIT, weights not committed); its "
        f"FordA test accuracy through our ONNX scorer: **{acc:.4f}** (its README: 0.9447). Tensors found by "
        f"`inspect_model`: {len(info['tensors'])}, ReLU layers {', '.join(relus)}. Reference maxima over all "
        f"{len(X)} FordA series took {t_ref:.0f} s. Decoder `{spec}`, budget {args.budget} presentations, seed 0.",
        "",
        "| unit | optimizer | max over FordA | best found | relative activation | presentations | time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| `{u}` | {o} | {m:.3f} | {b:.3f} | {rel:.2f} | {p} | {t:.0f} |" for u, o, m, b, rel, p, t in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
