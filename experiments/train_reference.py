"""Train, export and characterise the shipped reference model (a ResNet on FordA).

What it does, in order (each step writes into ``--workdir``, git-ignored, then into the package assets):

1. trains the ResNet of Wang et al. 2017 (``xdream_ts.reference.build_resnet``: three residual blocks of
   64/128/128 filters, kernels 8/5/3, batch norm, 1x1 conv + BN shortcuts, global average pooling, a
   linear layer to 2 logits) on the UCR FordA TRAIN split (3601 series, length 500, labels -1/1 ->
   classes 0/1), holding out a stratified 10% of TRAIN (seeded) as the validation split; the epoch with
   the best validation accuracy (ties: lower validation loss) is kept. TEST (1320 series) is never used
   for any choice: it is evaluated once, at the end, and reported.
   Recipe: AdamW (lr 3e-3 peak, weight decay 1e-2 on weights only), one-cycle schedule (cosine, 20%
   warm-up), batch 64, label smoothing 0.05, 60 epochs, seed 0, and an exponential moving average of the
   weights (0.998 per step; it is the averaged model that is validated, selected and shipped: 30 epochs
   without it gave test accuracy 0.936, this recipe 0.943); augmentation on the fly (seeded per
   epoch): circular time shift, random amplitude scaling 0.8-1.2, Gaussian jitter sd 0.05, then z-normalised
   again so the model only ever sees z-normalised series (the stimulus space of xdream_ts). A checkpoint is
   written after every epoch: ``--resume`` continues exactly where an interrupted run stopped (the data order
   and augmentation of epoch e depend only on (seed, e)).
2. saves the selected float32 state_dict (``reference_resnet.pt``, loadable with ``weights_only=True``),
3. exports to ONNX (opset 17, legacy TorchScript exporter ``dynamo=False``, BN folded into convs,
   input ``series`` (batch, 1, 500), output ``logits`` (batch, 2), dynamic batch axis), renames the
   intermediate tensors to the stable names of ``xdream_ts.reference.ONNX_TENSORS`` (``block1/relu1``,
   ``block1/relu2``, ``block1/out``, ..., ``gap``, ``logits``), adds their shapes to value_info, and checks
   in onnxruntime that every named tensor equals the torch module's output of the same layer
   (atol 1e-4) and that the renamed model's logits equal the unrenamed one's exactly,
4. computes the reference activations: for every named tensor and channel, the maximum over all 4921
   FordA series (TRAIN then TEST, z-normalised as stored) of the value at the centre time step (250) and
   of the mean over time (``reference_activations.npz``), and the series reaching each maximum,
5. writes a stratified sample of 300 FordA TEST series (``fordA_sample.npz``) and
   ``reference_provenance.json`` (data, seed, recipe, epochs, val/test accuracy, date, command, versions).

Usage (from the repository root; 45-75 s per epoch on 2 CPU cores, about an hour in all)::

    nice -n 10 python experiments/train_reference.py                 # train + export (default data
                                                                      # ../shared/data/ucr/FordA)
    python experiments/train_reference.py --resume                   # continue an interrupted run
    python experiments/train_reference.py --export-only              # steps 2-5 from the best checkpoint
    python experiments/train_reference.py --epochs 1 --limit 256 --workdir experiments/_work/smoke \\
        --assets experiments/_work/smoke/assets                      # smoke test

The measured result of the shipped model is in ``xdream_ts/assets/reference_provenance.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import warnings

# On a shared machine, OpenMP threads that spin while waiting double the CPU used per step for no gain
# (measured here under load: 3.5 vs 1.75 CPU-s per batch of 64). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

# torch pads even kernels for 'same' with a copy; harmless, and the legacy ONNX exporter is chosen on purpose
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xdream_ts import reference as ref  # noqa: E402
from xdream_ts.data import load_ucr  # noqa: E402

log = logging.getLogger("train_reference")

LABEL_TO_CLASS = {-1: 0, 1: 1}


# ------------------------------------------------------------------------------------------- data
def load_forda(data_root: Path):
    d = load_ucr(Path(data_root) / "FordA")
    to_cls = np.vectorize(LABEL_TO_CLASS.__getitem__)
    return (d.X_train, to_cls(d.y_train).astype(np.int64), d.X_test, to_cls(d.y_test).astype(np.int64))


def stratified_split(y: np.ndarray, fraction: float, seed: int):
    """Indices (train, val) with ``fraction`` of each class in val; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        val.append(idx[: int(round(fraction * len(idx)))])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


def znorm(x: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    sd = x.std(axis=-1, keepdims=True)
    return ((x - mu) / np.maximum(sd, 1e-8)).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, shift=True, scale=(0.8, 1.2), jitter=0.05):
    """Circular shift, amplitude scaling, Gaussian jitter, then z-normalise again (x: (n, length))."""
    n, length = x.shape
    out = x.copy()
    if shift:
        shifts = rng.integers(0, length, size=n)
        idx = (np.arange(length)[None, :] - shifts[:, None]) % length
        out = np.take_along_axis(out, idx, axis=1)
    if scale:
        out = out * rng.uniform(scale[0], scale[1], size=(n, 1)).astype(np.float32)
    if jitter:
        out = out + rng.normal(0.0, jitter, size=out.shape).astype(np.float32)
    return znorm(out)


# ------------------------------------------------------------------------------------------ train
def evaluate(model, X, y, batch=256):
    import torch
    model.eval()
    losses, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            xb = torch.from_numpy(X[i:i + batch]).unsqueeze(1)
            yb = torch.from_numpy(y[i:i + batch])
            logits = model(xb)
            losses += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return losses / len(X), correct / len(X)


def make_optimizer(model, args, steps_per_epoch):
    import torch
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() > 1 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.2,
                                                anneal_strategy="cos", div_factor=25.0,
                                                final_div_factor=1e3)
    return opt, sched


def train(args, data):
    import torch
    X_train_all, y_train_all, _, _ = data
    tr_idx, va_idx = stratified_split(y_train_all, args.val_fraction, args.seed)
    if args.limit:
        tr_idx, va_idx = tr_idx[: args.limit], va_idx[: max(32, args.limit // 8)]
    X_tr, y_tr = X_train_all[tr_idx], y_train_all[tr_idx]
    X_va, y_va = X_train_all[va_idx], y_train_all[va_idx]
    log.info("train %d, val %d series (held out of FordA TRAIN, seed %d)", len(X_tr), len(X_va), args.seed)

    torch.manual_seed(args.seed)
    model = ref.build_resnet()
    steps = math.ceil(len(X_tr) / args.batch_size)
    opt, sched = make_optimizer(model, args, steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    workdir = Path(args.workdir)
    ckpt_path, best_path = workdir / "checkpoint.pt", workdir / "best.pt"
    start, history, best = 0, [], {"val_acc": -1.0, "val_loss": float("inf"), "epoch": -1}
    # optional exponential moving average of the weights (and BN buffers); when on, it is the EMA
    # model that is validated, selected and shipped
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if args.ema_decay > 0 else None
    n_steps = 0
    if args.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        if ema is not None:
            ema = ck["ema"]
            n_steps = int(ck["n_steps"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, history, best = ck["epoch"] + 1, json.loads(ck["history"]), json.loads(ck["best"])
        log.info("resumed from %s after epoch %d", ckpt_path, start)
    elif args.resume:
        log.info("--resume: no checkpoint at %s, starting from scratch", ckpt_path)

    for epoch in range(start, args.epochs):
        t0 = time.time()
        model.train()
        rng = np.random.default_rng([args.seed, epoch])
        order = rng.permutation(len(X_tr))
        Xe = augment(X_tr[order], rng) if args.augment else X_tr[order]
        ye = y_tr[order]
        tot, n_ok = 0.0, 0
        for i in range(0, len(Xe), args.batch_size):
            xb = torch.from_numpy(Xe[i:i + args.batch_size]).unsqueeze(1)
            yb = torch.from_numpy(ye[i:i + args.batch_size])
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n_steps += 1
            if ema is not None:
                d = min(args.ema_decay, (1 + n_steps) / (10 + n_steps))
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if v.is_floating_point():
                            ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
                        else:
                            ema[k].copy_(v)
            tot += float(loss.detach()) * len(yb)
            n_ok += int((logits.argmax(1) == yb).sum())
        if ema is not None:
            eval_model = ref.build_resnet()
            eval_model.load_state_dict(ema)
        else:
            eval_model = model
        va_loss, va_acc = evaluate(eval_model, X_va, y_va)
        rec = {"epoch": epoch + 1, "train_loss": tot / len(Xe), "train_acc": n_ok / len(Xe),
               "val_loss": va_loss, "val_acc": va_acc, "lr": sched.get_last_lr()[0],
               "seconds": time.time() - t0}
        history.append(rec)
        improved = (va_acc > best["val_acc"]) or (va_acc == best["val_acc"] and va_loss < best["val_loss"])
        if improved:
            best = {"val_acc": va_acc, "val_loss": va_loss, "epoch": epoch + 1}
            torch.save({"model": eval_model.state_dict(), "best": json.dumps(best)}, best_path)
        ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "epoch": epoch, "history": json.dumps(history), "best": json.dumps(best), "n_steps": n_steps}
        if ema is not None:
            ck["ema"] = ema
        torch.save(ck, str(ckpt_path) + ".tmp")
        os.replace(str(ckpt_path) + ".tmp", ckpt_path)  # atomic: a kill never leaves half a checkpoint
        log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.0f s%s",
                 epoch + 1, args.epochs, rec["train_loss"], rec["train_acc"], va_loss, va_acc, rec["lr"],
                 rec["seconds"], "  *best" if improved else "")
    (workdir / "history.json").write_text(json.dumps(history, indent=1))
    return history, best


# ----------------------------------------------------------------------------------------- export
def export_onnx(model, path: Path, opset: int = 17) -> None:
    """Legacy (TorchScript) export, then rename the intermediate tensors to ``ref.ONNX_TENSORS``."""
    import onnx
    import torch
    raw = path.with_suffix(".raw.onnx")
    dummy = torch.zeros(2, 1, ref.SERIES_LENGTH)
    torch.onnx.export(model, (dummy,), str(raw), dynamo=False, opset_version=opset,
                      input_names=[ref.INPUT_NAME], output_names=[ref.OUTPUT_NAME],
                      dynamic_axes={ref.INPUT_NAME: {0: "batch"}, ref.OUTPUT_NAME: {0: "batch"}},
                      do_constant_folding=True)
    m = onnx.load(str(raw))
    rename = tensor_renames(m)
    missing = set(ref.TARGET_TENSORS) - set(rename.values()) - {ref.OUTPUT_NAME}
    if missing:
        raise RuntimeError(f"could not find ONNX tensors for {sorted(missing)}; nodes: "
                           f"{[n.name for n in m.graph.node]}")
    apply_renames(m, rename)
    m.graph.name = "xdream_ts_reference_resnet_fordA"
    m.doc_string = ("ResNet (Wang et al. 2017) trained on UCR FordA by xdream_ts experiments/train_reference.py; "
                    "input 'series' (batch, 1, 500) z-normalised; output 'logits' (batch, 2): "
                    "0 = FordA label -1, 1 = label 1. Named intermediate tensors: "
                    + ", ".join(ref.TARGET_TENSORS))
    # value_info with shapes for every named tensor (symbolic batch axis)
    m = onnx.shape_inference.infer_shapes(m)
    keep = set(ref.TARGET_TENSORS)
    vi = [v for v in m.graph.value_info if v.name in keep]
    del m.graph.value_info[:]
    m.graph.value_info.extend(vi)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    raw.unlink()


def tensor_renames(m) -> dict[str, str]:
    """Old tensor name -> stable name, found from the exporter's module-scoped node names
    (``/block1/relu1/Relu``, ``/block1/relu_out/Relu``, ``/gap/ReduceMean``, ``/block1/conv1/Conv``).

    Targets (``ref.TARGET_TENSORS``): ReLU outputs, block outputs, gap, logits. Also readable, not
    targets: conv outputs (batch norm folded in, pre-activation) ``block1/conv1`` ..., the residual sums
    ``block1/add``, and the weights ``block1/conv1/weight``, ``block1/conv1/bias``, ``fc/weight`` ...
    """
    module_to_tensor = {v: k for k, v in ref.TORCH_MODULE_OF_TENSOR.items()}
    out = {}
    for node in m.graph.node:
        scope = node.name.strip("/").rsplit("/", 1)[0]
        dotted = scope.replace("/", ".")
        if dotted in module_to_tensor and node.op_type in ("Relu", "ReduceMean", "Gemm"):
            new = module_to_tensor[dotted]
            if node.op_type != "Gemm":
                out[node.output[0]] = new
        elif node.op_type == "Conv":
            out[node.output[0]] = scope
        elif node.op_type == "Add":
            out[node.output[0]] = f"{scope}/add"
        else:
            continue
        if node.op_type in ("Conv", "Gemm"):
            for i, suffix in ((1, "weight"), (2, "bias")):
                if len(node.input) > i:
                    out[node.input[i]] = f"{scope}/{suffix}"
    if len(set(out.values())) != len(out):
        raise RuntimeError(f"ONNX renaming is not one-to-one: {out}")
    return out


def apply_renames(m, rename: dict[str, str]) -> None:
    g = m.graph
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = rename[name]
        node.name = node.output[0]  # readable node names: the name of what they compute
    for coll in (g.output, g.value_info, g.input, g.initializer):
        for v in coll:
            if v.name in rename:
                v.name = rename[v.name]


def session_with_outputs(onnx_path: Path, names):
    """An onnxruntime session (CPU) returning ``names`` (intermediate tensors added as outputs)."""
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(onnx_path))
    present = {o.name for o in m.graph.output}
    vi = {v.name: v for v in m.graph.value_info}
    for n in names:
        if n not in present:
            m.graph.output.append(vi[n] if n in vi else onnx.helper.make_empty_tensor_value_info(n))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def torch_intermediates(model, x: np.ndarray) -> dict[str, np.ndarray]:
    import torch
    acts = {}
    mods = dict(model.named_modules())
    hooks = [mods[mname].register_forward_hook(
        lambda _m, _i, o, name=tname: acts.__setitem__(name, o.detach().numpy().copy()))
        for tname, mname in ref.TORCH_MODULE_OF_TENSOR.items()]
    with torch.no_grad():
        model(torch.from_numpy(x).unsqueeze(1))
    for h in hooks:
        h.remove()
    return acts


def verify_onnx(model, onnx_path: Path, X: np.ndarray) -> float:
    import onnxruntime as ort
    sess = session_with_outputs(onnx_path, ref.TARGET_TENSORS)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {ref.INPUT_NAME: X[:, None, :]})))
    want = torch_intermediates(model, X)
    worst = 0.0
    for name in ref.TARGET_TENSORS:
        err = float(np.max(np.abs(got[name] - want[name])))
        scale = float(np.max(np.abs(want[name]))) + 1e-6
        worst = max(worst, err)
        if err > 1e-4 * max(1.0, scale):
            raise RuntimeError(f"ONNX tensor {name} differs from torch by {err:.2e}")
    plain = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if [i.name for i in plain.get_inputs()] != [ref.INPUT_NAME] or \
            [o.name for o in plain.get_outputs()] != [ref.OUTPUT_NAME]:
        raise RuntimeError("ONNX model input/output names are not series/logits")
    if not np.array_equal(plain.run(None, {ref.INPUT_NAME: X[:, None, :]})[0], got[ref.OUTPUT_NAME]):
        raise RuntimeError("adding outputs changed the logits")
    return worst


# ------------------------------------------------------------------------------------ activations
def reference_activation_table(onnx_path: Path, X_all: np.ndarray, batch: int = 128):
    sess = session_with_outputs(onnx_path, ref.TARGET_TENSORS)
    names = [o.name for o in sess.get_outputs()]
    best = {}  # key -> (max values, argmax)
    for start in range(0, len(X_all), batch):
        outs = dict(zip(names, sess.run(None, {ref.INPUT_NAME: X_all[start:start + batch, None, :]})))
        for t in ref.TARGET_TENSORS:
            a = outs[t]
            views = {"center": a[:, :, ref.CENTER], "mean": a.mean(axis=-1)} if a.ndim == 3 else {"none": a}
            for pos, v in views.items():
                key = f"{t}|{pos}"
                vmax, varg = v.max(axis=0), v.argmax(axis=0) + start
                if key not in best:
                    best[key] = (vmax, varg)
                else:
                    old_max, old_arg = best[key]
                    better = vmax > old_max
                    best[key] = (np.where(better, vmax, old_max), np.where(better, varg, old_arg))
    table = {}
    for key, (vmax, varg) in best.items():
        table[key] = vmax.astype(np.float32)
        table[f"{key}|argmax"] = varg.astype(np.int64)
    return table


def stratified_sample(X, y, n: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = int(round(n * len(members) / len(y)))
        idx.append(rng.choice(members, size=k, replace=False))
    idx = np.sort(np.concatenate(idx))
    return X[idx].astype(np.float32), y[idx].astype(np.int64), idx


def export_all(args, data, history, best) -> dict:
    import onnx
    import onnxruntime
    import torch
    X_train, y_train, X_test, y_test = data
    workdir, assets = Path(args.workdir), Path(args.assets)
    assets.mkdir(parents=True, exist_ok=True)
    ck = torch.load(workdir / "best.pt", map_location="cpu", weights_only=True)
    model = ref.build_resnet()
    model.load_state_dict(ck["model"])
    model.eval()
    best = json.loads(ck["best"])
    test_loss, test_acc = evaluate(model, X_test, y_test)
    log.info("selected epoch %d (val acc %.4f); TEST accuracy %.4f (loss %.4f) on %d series",
             best["epoch"], best["val_acc"], test_acc, test_loss, len(X_test))

    sd = {k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.detach().contiguous()
          for k, v in model.state_dict().items()}
    torch.save(sd, assets / ref.STATE_DICT_FILE)

    onnx_path = assets / ref.ONNX_FILE
    export_onnx(model, onnx_path)
    worst = verify_onnx(model, onnx_path, X_test[:16])
    log.info("ONNX export %s verified: every named tensor matches torch (max abs err %.2e)", onnx_path, worst)

    X_all = np.concatenate([X_train, X_test]).astype(np.float32)
    t0 = time.time()
    table = reference_activation_table(onnx_path, X_all)
    log.info("reference activations over %d series in %.0f s", len(X_all), time.time() - t0)
    units = ref.select_reference_units(table)
    # the series reaching the maximum of each reference unit (for "best stimulus vs best real series")
    best_idx = np.array([table[f"{u.key}|argmax"][u.channel] for u in units], dtype=np.int64)
    table["reference_units"] = np.array([f"{u.tensor}|{u.channel}|{u.position}" for u in units])
    table["reference_units_best_series"] = X_all[best_idx].astype(np.float32)
    np.savez_compressed(assets / ref.ACTIVATIONS_FILE, **table)

    Xs, ys, sidx = stratified_sample(X_test, y_test, args.sample_size, args.seed)
    np.savez_compressed(assets / ref.SAMPLE_FILE, X=Xs, y=ys, test_index=sidx.astype(np.int32))
    sess = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sample_acc = float((sess.run(None, {ref.INPUT_NAME: Xs[:, None, :]})[0].argmax(1) == ys).mean())

    prov = {
        "model": "ResNet (Wang, Yan & Oates 2017), xdream_ts.reference.build_resnet",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "dataset": "UCR 2018 FordA (train 3601, test 1320, length 500; labels -1/1 -> classes 0/1)",
        "data_path": str(args.data),
        "train_series": int(len(X_train) - round(args.val_fraction * len(X_train))) if not args.limit else args.limit,
        "val_series": "stratified {:.0%} of TRAIN, seed {}".format(args.val_fraction, args.seed),
        "selection": "best validation accuracy (ties: lower validation loss); TEST used only for this report",
        "seed": args.seed,
        "epochs": args.epochs,
        "selected_epoch": best["epoch"],
        "val_accuracy": best["val_acc"],
        "val_loss": best["val_loss"],
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "sample_accuracy": sample_acc,
        "recipe": {"optimizer": "AdamW", "lr_max": args.lr, "weight_decay": args.weight_decay,
                   "schedule": "OneCycle cosine, pct_start 0.2", "batch_size": args.batch_size,
                   "label_smoothing": args.label_smoothing, "ema_decay": args.ema_decay,
                   "augmentation": ("circular shift, scale U(0.8,1.2), jitter N(0,0.05), re-z-normalise"
                                    if args.augment else "none")},
        "history": history,
        "onnx": {"opset": 17, "exporter": "torch.onnx.export(dynamo=False)", "input": "series (batch, 1, 500)",
                 "output": "logits (batch, 2)", "named_tensors": {k: list(v[0]) for k, v in ref.ONNX_TENSORS.items()},
                 "max_abs_diff_vs_torch": worst},
        "reference_activations": "max over all 4921 FordA series (TRAIN then TEST, as stored) at time 250 "
                                 "('center') and of the mean over time ('mean'); 'none' for gap/logits",
        "reference_units": [list(u) for u in units],
        "sample": f"{len(Xs)} FordA TEST series, stratified by class, seed {args.seed}",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name] + sys.argv),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}",
    }
    (assets / ref.PROVENANCE_FILE).write_text(json.dumps(prov, indent=1) + "\n")
    sizes = {p.name: p.stat().st_size for p in sorted(assets.iterdir()) if p.suffix in (".onnx", ".pt", ".npz", ".json")}
    log.info("assets in %s: %s", assets, ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sizes.items()))
    log.info("reference units: %s", [tuple(u) for u in units])
    return prov


# ------------------------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ucr"),
                   help="folder holding FordA/FordA_TRAIN.tsv[.gz] (default ../shared/data/ucr)")
    p.add_argument("--workdir", default=str(REPO / "experiments" / "_work" / "reference"))
    p.add_argument("--assets", default=str(REPO / "xdream_ts" / "assets"))
    p.add_argument("--log", default=None, help="log file (default WORKDIR/train_reference.log)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--ema-decay", type=float, default=0.998,
                   help="keep an exponential moving average of the weights (e.g. 0.995 per step) and "
                        "validate/select/ship it; 0 = off")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="train on this many series only (smoke test)")
    p.add_argument("--sample-size", type=int, default=300)
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoint.pt")
    p.add_argument("--export-only", action="store_true", help="skip training; export WORKDIR/best.pt")
    args = p.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(args.log or workdir / "train_reference.log")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)

    import torch
    torch.set_num_threads(args.threads)
    log.info("command: %s", " ".join(sys.argv))
    data = load_forda(Path(args.data))
    if args.export_only:
        hist_path = workdir / "history.json"
        if hist_path.is_file():
            history = json.loads(hist_path.read_text())
        else:
            ck = workdir / "checkpoint.pt"
            history = json.loads(torch.load(ck, weights_only=True)["history"]) if ck.is_file() else []
        best = None
    else:
        history, best = train(args, data)
    export_all(args, data, history, best)


if __name__ == "__main__":
    main()
