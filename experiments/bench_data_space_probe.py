"""Side check for experiments/results/data_space.md ("What we saw"): is auto+data limited by the number of PCA
components or by the optimizer sphere? Fits the auto PCA at 99 % variance (cap 64, as shipped) and at 100 %
(cap 200), and runs each with the default optimizer radius (0.5 sqrt(d)) and with radius = the norm of the best
encoded real series. Budget 3000, seed 0.  Run: .venv/bin/python experiments/bench_data_space_probe.py
(note: fit_data_decoder caches its fits in .xdream_ts/ beside the data when that folder is writable)."""
import sys, numpy as np; sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
import bench_data_space as b, xdream_ts
from xdream_ts.targets import TargetSpec, build
from xdream_ts.loop import prepare
from xdream_ts.data import load_dataset
from xdream_ts.decoders.auto import fit_data_decoder
import tempfile
for name, unit in [("gunpoint_cnn","logits:1@center"),("gunpoint_cnn","/relu3/Relu_output_0:2@center"),("ecg200_lr","probabilities_logits:1@center"),("italy_gru","logits:1@center")]:
    path, (train,_,L) = b.MODELS/f"{name}.onnx", b.DATA[name]
    spec = TargetSpec(model=str(path), units=[unit], data=str(train))
    ds = load_dataset(train, length=L)
    for var, cap in [(0.99, 64), (1.0, 200)]:
        dec = fit_data_decoder(ds, cache_dir=tempfile.mkdtemp(), variance=var, max_components=cap)
        if dec.channels is None: dec.channels = 1
        _, p, _ = prepare(build(spec), dec, "default", None, None)
        for lab, op in [("r=0.5sqrt(d)", None), ("r=start", {"radius": float(np.linalg.norm(p["init"][0]))})]:
            r = xdream_ts.run(decoder=dec, scorer=spec, optimizer="default", budget=3000, seed=0, progress=False, store=None, optimizer_params=op)
            print(name, unit, f"var {var} k={dec.latent_dim}", lab, round(r.relative_activation,3))
