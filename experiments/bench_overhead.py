"""Overhead of the loop over its scorer: loop wall time / scorer-alone wall time on the same batches.

Target: <= 1.05 at 10,000 presentations on the shipped ONNX model (a ResNet of 3 residual blocks,
64/128/128 filters, length 500). Also presentations per second of the loop, of the scorer alone and of
a bare onnxruntime session on the same batches.

Protocol. One search = the genetic algorithm (population 20) through the DCT basis decoder (32
components), onnxruntime on CPU with one intra-op thread (what a sweep worker uses), one scorer call per
generation. After each search the exact batches it presented (read back from its run) are scored again
by the scorer alone and by a bare ``InferenceSession.run``; loop / scorer is the overhead ratio.
Variants are interleaved trial by trial (the machine is shared), medians over trials are reported.

Two parts, because the loop's cost is a fixed amount per generation while the ResNet costs 0.5-3 s
per generation of 20 series on these shared CPU cores (10,000 presentations = 500 generations):

  A. the target's setting: the ResNet, unit ``logits:1`` (the whole network runs), directly measured;
  B. the loop's own cost per generation, measured precisely against a cheap scorer (a 1-layer conv net
     on the same length-500 series, ~1 ms per generation), where nothing hides it. Loop cost / ResNet
     time per generation then gives the ratio the ResNet would see with that store (an upper bound for
     write-behind, which overlaps the write with the next generation's scoring).

Variants of the run store:
  memory          ``store=None`` (zarr in memory): decoder + optimizer + bookkeeping only
  disk            on-disk store, ``write_behind=True`` (the default: generation g is written while g+1
                  is scored)
  disk-sync       on-disk store, ``write_behind=False`` (every generation on disk before the next)
  disk-1attr      prototype: ``disk`` with the commit marker written in ONE zarr.json write
                  (``group.update_attributes``) instead of ``group.attrs.update`` (one write per key)
  disk-batched    prototype: ``disk-1attr`` with generations buffered and flushed at most every
                  ``--flush-seconds`` (chunks of all buffered generations in one concurrent write, one
                  commit marker); a crash loses at most that much work, which resume redoes exactly
  disk-chunk16    prototype: arrays chunked by 16 generations, generations buffered in memory and
                  written as one slab per array when a chunk is full (7 chunk writes + 1 commit marker
                  per 16 generations instead of 7 + 2 per generation); a crash loses at most 15
                  generations, which resume redoes exactly

A separate profiled run (``disk-sync``) splits a generation's wall time into decode / score /
optimizer / store append / rest.

    python experiments/bench_overhead.py --quick   # A: 200 presentations x 1 trial, B: 4,000 x 3 (~2-5 min here)
    python experiments/bench_overhead.py           # A: 10,000 presentations x 3 trials, B: 10,000 x 5 (hours on 2 cores)
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED = ROOT / "xdream_ts" / "assets" / "reference_resnet.onnx"
VARIANTS = ("memory", "disk", "disk-sync", "disk-1attr", "disk-batched", "disk-chunk16")


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
def model_path(tmp: Path) -> tuple[Path, str]:
    """The shipped model when installed, else the same architecture (random weights) exported here."""
    if SHIPPED.is_file():
        return SHIPPED, "shipped reference_resnet.onnx"
    import warnings

    import torch

    from xdream_ts.reference import build_resnet
    torch.manual_seed(0)
    net = build_resnet().eval()
    path = tmp / "resnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 1, 500),), str(path), dynamo=False, input_names=["series"],
                          output_names=["logits"], dynamic_axes={"series": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17)
    return path, "ResNet of the shipped architecture (Wang et al. 2017, 64/128/128 filters, length 500), random weights, exported here"


def cheap_model(tmp: Path) -> Path:
    """series (batch, 1, 500) -> conv k5 (8 ch) -> relu -> mean -> 'logits' (2): ~1 ms per generation."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 1, 5)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(0, 1.0, (8, 2)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["series", "w"], ["c"], pads=[2, 2]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["gap"], axes=[2], keepdims=0),
             helper.make_node("MatMul", ["gap", "fc"], ["logits"])]
    g = helper.make_graph(nodes, "cheap", [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 1, 500])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], initializer=init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp / "cheap.onnx"
    onnx.save(m, str(path))
    return path


def bare_session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------------
# Store prototypes (measured here; the proposal for xdream_ts/store.py)
# --------------------------------------------------------------------------------------------------
class Prototype:
    """Patches RunStore.append for the duration of a run: 'one-attr' or 'batched' (with flush_seconds)."""

    def __init__(self, mode: str, flush_seconds: float = 1.0, chunk: int = 16):
        self.mode, self.flush_seconds, self.chunk = mode, flush_seconds, chunk

    def __enter__(self):
        from xdream_ts import store as st_mod
        self.mod = st_mod
        self.orig = {k: getattr(st_mod.RunStore, k) for k in ("append", "read", "mark_complete")}
        proto = self

        def append_one_attr(self, g, *, codes, series, scores, objective, clean, n_evaluated, state, presentations):
            rows = proto.rows(self, codes, series, scores, objective, clean, n_evaluated, state)
            st_mod._write_rows(g, [(self._arr(k), v) for k, v in rows.items()])
            self.group.update_attributes({"generations_completed": g + 1, "presentations": int(presentations)})

        def append_batched(self, g, **rec):
            buf = self.__dict__.setdefault("_buffer", [])
            buf.append((g, rec))
            last = self.__dict__.setdefault("_last_flush", time.perf_counter())
            if time.perf_counter() - last >= proto.flush_seconds:
                proto.flush(self)

        def read(self, name, generations=None):
            proto.flush(self)
            return proto.orig["read"](self, name, generations)

        def mark_complete(self, summary):
            proto.flush(self)
            return proto.orig["mark_complete"](self, summary)

        def append_chunked(self, g, **rec):
            buf = self.__dict__.setdefault("_buffer", [])
            buf.append((g, rec))
            if (g + 1) % proto.chunk == 0:
                proto.flush_slab(self)

        def read_chunked(self, name, generations=None):
            proto.flush_slab(self)
            return proto.orig["read"](self, name, generations)

        def mark_complete_chunked(self, summary):
            proto.flush_slab(self)
            return proto.orig["mark_complete"](self, summary)

        st_mod.RunStore.append = {"one-attr": append_one_attr, "batched": append_batched,
                                  "chunked": append_chunked}[self.mode]
        if self.mode == "batched":
            st_mod.RunStore.read = read
            st_mod.RunStore.mark_complete = mark_complete
        if self.mode == "chunked":
            import zarr
            st_mod.RunStore.read = read_chunked
            st_mod.RunStore.mark_complete = mark_complete_chunked
            self.orig_create_array = zarr.Group.create_array
            k = self.chunk

            def create_array(group, name, *, shape, chunks=None, **kw):  # generation axis chunked by k
                chunks = (k, *tuple(chunks)[1:]) if chunks is not None else None
                return proto.orig_create_array(group, name, shape=shape, chunks=chunks, **kw)
            zarr.Group.create_array = create_array
        return self

    def __exit__(self, *exc):
        for k, v in self.orig.items():
            setattr(self.mod.RunStore, k, v)
        if self.mode == "chunked":
            import zarr
            zarr.Group.create_array = self.orig_create_array

    def flush_slab(self, st):
        """Write the buffered generations g0..g1 as one slab per array (one chunk when aligned)."""
        import asyncio

        from zarr.core.sync import sync
        buf = st.__dict__.get("_buffer") or []
        if not buf:
            return
        g0, g1 = buf[0][0], buf[-1][0] + 1
        if g1 > st.capacity():
            st.ensure_capacity(g1)
        per = [self.rows(st, r["codes"], r["series"], r["scores"], r["objective"], r["clean"], r["n_evaluated"],
                         r["state"]) for _, r in buf]
        slabs = {}
        for k in per[0]:
            vals = [p[k] for p in per]
            slabs[k] = np.array(vals, dtype=object) if k == "state" else np.stack(vals)

        targets = [(st._arr(k), v) for k, v in slabs.items()]  # handles looked up outside the event loop

        async def write_all():
            await asyncio.gather(*(arr._async_array.setitem(slice(g0, g1), v) for arr, v in targets))
        sync(write_all())
        st.group.update_attributes({"generations_completed": g1, "presentations": int(buf[-1][1]["presentations"])})
        buf.clear()

    def rows(self, st, codes, series, scores, objective, clean, n, state):
        from xdream_ts import serial
        m = self.mod
        rows = {"codes": np.asarray(codes, dtype=np.float64), "objective": np.asarray(objective, dtype=np.float64),
                "series": m._padded(series, n, st._arr("series").shape[1:], np.float32),
                "scores": m._padded(scores, n, st._arr("scores").shape[1:], np.float64),
                "n_evaluated": np.int32(n), "state": state if isinstance(state, str) else serial.dumps(state)}
        if clean is not None and "clean_scores" in st.group:
            rows["clean_scores"] = m._padded(clean, n, st._arr("clean_scores").shape[1:], np.float64)
        return rows

    def flush(self, st):
        import asyncio

        from zarr.core.sync import sync
        buf = st.__dict__.get("_buffer") or []
        if not buf:
            return
        writes = []
        for g, rec in buf:
            if g >= st.capacity():
                st.ensure_capacity(g + 1)
            rows = self.rows(st, rec["codes"], rec["series"], rec["scores"], rec["objective"], rec["clean"],
                             rec["n_evaluated"], rec["state"])
            writes += [(g, st._arr(k), v) for k, v in rows.items()]

        async def write_all():
            await asyncio.gather(*(arr._async_array.setitem(g, v) for g, arr, v in writes))
        sync(write_all())
        g, rec = buf[-1]
        st.group.update_attributes({"generations_completed": g + 1, "presentations": int(rec["presentations"])})
        buf.clear()
        st._last_flush = time.perf_counter()


# --------------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------------
def one_search(variant: str, model: Path, budget: int, seed: int, tmp: Path, flush_seconds: float):
    from xdream_ts import run
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    from xdream_ts.decoders import make_decoder

    scorer = OnnxScorer(model, Target("logits", 1), threads=1, providers="cpu")
    decoder = make_decoder("basis:32", length=500)
    store = None if variant == "memory" else tmp / f"{variant}-{seed}-{time.time_ns()}.zarr"
    ctx = {"disk-1attr": Prototype("one-attr"), "disk-batched": Prototype("batched", flush_seconds),
           "disk-chunk16": Prototype("chunked", chunk=16)}.get(variant)
    t0, c0 = time.perf_counter(), time.process_time()
    if ctx is None:
        r = run(decoder, scorer, "genetic", budget=budget, seed=seed, store=store, progress=False,
                write_behind=variant != "disk-sync")
    else:
        with ctx:
            r = run(decoder, scorer, "genetic", budget=budget, seed=seed, store=store, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    batches = [np.ascontiguousarray(r.series[g, :n]) for g, n in enumerate(r.n_evaluated)]
    if store is not None:
        shutil.rmtree(store, ignore_errors=True)
    return (wall, cpu), batches, scorer


def time_scorer(scorer, batches) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for x in batches:
        scorer(x)
    return time.perf_counter() - t0, time.process_time() - c0


def time_bare(sess, batches) -> float:
    xs = [x[:, None, :].astype(np.float32) for x in batches]  # layout conversion outside the clock
    t0 = time.perf_counter()
    for x in xs:
        sess.run(["logits"], {"series": x})
    return time.perf_counter() - t0


def profile_generation(model: Path, budget: int, tmp: Path) -> dict:
    """Mean ms per generation in decode, score, ask+tell and store append (write_behind=False)."""
    from xdream_ts import run
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    from xdream_ts.decoders import make_decoder
    from xdream_ts.optimizers import make_optimizer
    from xdream_ts.store import RunStore

    acc = {"decode": 0.0, "score": 0.0, "ask+tell": 0.0, "store append": 0.0}

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[key] += time.perf_counter() - t
        return wrapper

    scorer = OnnxScorer(model, Target("logits", 1), threads=1, providers="cpu")
    decoder = make_decoder("basis:32", length=500)
    opt = make_optimizer("genetic", decoder.latent_dim, seed=0)

    class D:
        latent_dim = decoder.latent_dim
        __call__ = staticmethod(timed("decode", decoder))

    class S:
        length, channels = scorer.length, None
        __call__ = staticmethod(timed("score", scorer))

    opt.ask, opt.tell = timed("ask+tell", opt.ask), timed("ask+tell", opt.tell)
    orig = RunStore.append
    RunStore.append = timed("store append", orig)
    try:
        t0 = time.perf_counter()
        r = run(D(), S(), opt, budget=budget, seed=0, store=tmp / f"prof-{time.time_ns()}.zarr", progress=False,
                write_behind=False)
        wall = time.perf_counter() - t0
    finally:
        RunStore.append = orig
    G = r.generations
    out = {k: v / G * 1e3 for k, v in acc.items()}
    out["rest of the loop"] = wall / G * 1e3 - sum(out.values())
    out["total"] = wall / G * 1e3
    return out


# --------------------------------------------------------------------------------------------------
def measure(variants, model, budget, trials, tmp, flush_seconds, tag) -> dict:
    sess = bare_session(model)
    res = {v: {"loop": [], "scorer": [], "bare": [], "loop_cpu": [], "scorer_cpu": [], "generations": 0}
           for v in variants}
    for trial in range(trials):
        order = variants if trial % 2 == 0 else variants[::-1]
        for v in order:
            (wall, cpu), batches, scorer = one_search(v, model, budget, seed=trial, tmp=tmp,
                                                      flush_seconds=flush_seconds)
            (ts, tsc), tb = time_scorer(scorer, batches), time_bare(sess, batches)
            res[v]["loop"].append(wall)
            res[v]["scorer"].append(ts)
            res[v]["loop_cpu"].append(cpu)
            res[v]["scorer_cpu"].append(tsc)
            res[v]["bare"].append(tb)
            res[v]["generations"] = len(batches)
            print(f"{tag} trial {trial} {v:13s} loop {wall:8.2f}s scorer {ts:8.2f}s bare {tb:8.2f}s "
                  f"ratio {wall / ts:.3f} cpu ratio {cpu / tsc:.3f}", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small budgets, few trials (~2-5 minutes on 2 shared cores)")
    ap.add_argument("--budget", type=int, help="part A presentations per search (default 10,000; quick 200)")
    ap.add_argument("--trials", type=int, help="part A interleaved trials (default 3; quick 1)")
    ap.add_argument("--budget-b", type=int, help="part B presentations per search (default 10,000; quick 4,000)")
    ap.add_argument("--trials-b", type=int, help="part B interleaved trials (default 5; quick 3)")
    ap.add_argument("--flush-seconds", type=float, default=1.0, help="disk-batched prototype's flush interval")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="part B variants")
    ap.add_argument("--variants-a", default="memory,disk,disk-sync", help="part A variants")
    ap.add_argument("--out", default=str(RESULTS / "overhead.md"))
    args = ap.parse_args(argv)
    budget = args.budget or (200 if args.quick else 10000)
    trials = args.trials or (1 if args.quick else 3)
    budget_b = args.budget_b or (4000 if args.quick else 10000)
    trials_b = args.trials_b or (3 if args.quick else 5)
    tmp = Path(tempfile.mkdtemp(prefix="xdream-overhead-"))
    try:
        resnet, model_desc = model_path(tmp)
        cheap = cheap_model(tmp)
        res_b = measure([v for v in args.variants.split(",") if v], cheap, budget_b, trials_b, tmp,
                        args.flush_seconds, "B")
        prof = profile_generation(cheap, budget_b, tmp)
        res_a = measure([v for v in args.variants_a.split(",") if v], resnet, budget, trials, tmp,
                        args.flush_seconds, "A")
        write_results(args, res_a, res_b, prof, (budget, trials, budget_b, trials_b), model_desc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _rows(res, budget, resnet=None) -> list[str]:
    """resnet: (wall ms, cpu ms) of the ResNet scorer per generation, for the predicted-ratio columns."""
    rows = []
    for v, r in res.items():
        loop, sc, bare, lc, scc = (np.array(r[k]) for k in ("loop", "scorer", "bare", "loop_cpu", "scorer_cpu"))
        G = r["generations"]
        ratio, cratio = loop / sc, lc / scc
        extra_ms = (np.median(loop) - np.median(sc)) / G * 1e3
        extra_cpu = (np.median(lc) - np.median(scc)) / G * 1e3
        row = (f"| {v} | {np.median(ratio):.3f} [{ratio.min():.3f}, {ratio.max():.3f}] | {np.median(cratio):.3f} | "
               f"{budget / np.median(loop):.0f} | {budget / np.median(sc):.0f} | {budget / np.median(bare):.0f} | "
               f"{np.median(sc / bare):.3f} | {extra_ms:.1f} | {extra_cpu:.1f} |")
        if resnet is not None:
            row += f" {1 + max(extra_ms, 0) / resnet[0]:.3f} | {1 + max(extra_cpu, 0) / resnet[1]:.3f} |"
        rows.append(row)
    return rows


def write_results(args, res_a, res_b, prof, sizes, model_desc) -> None:
    budget, trials, budget_b, trials_b = sizes
    first = next(iter(res_a.values()))
    resnet_ms = float(np.median(np.array(first["scorer"]) / first["generations"] * 1e3))
    resnet_cpu = float(np.median(np.array(first["scorer_cpu"]) / first["generations"] * 1e3))
    cmd = "python experiments/bench_overhead.py" + (" --quick" if args.quick else "")
    head = ("| store | loop / scorer (wall), median [min, max] | loop / scorer (CPU) | loop pres/s | scorer pres/s | "
            "bare onnxruntime pres/s | scorer / bare (wall) | loop cost over the scorer, wall ms per generation | "
            "same, CPU ms per generation |")
    text = f"""# Loop overhead over the scorer

Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average
at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}); no GPU lent to this task: onnxruntime on CPU,
1 intra-op thread. Python {platform.python_version()}. Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.
Command: `{cmd}`. Search: genetic (population 20), basis:32 decoder, one scorer call per generation of 20
series, variants interleaved, medians over trials. Target: loop / scorer <= 1.05 at 10,000 presentations.

## A. The ResNet ({model_desc}), target logits:1: {budget} presentations, {trials} trial(s)

Scorer alone: {resnet_ms:.0f} ms wall, {resnet_cpu:.0f} ms CPU per generation of 20 series on this machine at
the time. CPU = process time of all threads (the zarr event loop and the write-behind thread included):
on a loaded shared machine it measures the work the loop adds, where wall time also measures how long
each thread handoff waits for a core.

{head}
|---|---|---|---|---|---|---|---|---|
{chr(10).join(_rows(res_a, budget))}

## B. The loop's own cost, against a cheap scorer (1-layer conv net, length 500): {budget_b} presentations, {trials_b} trials

The last two columns apply B's cost per generation to A's ResNet time per generation ({resnet_ms:.0f} ms wall,
{resnet_cpu:.0f} ms CPU): the ratio the ResNet sees with that store (write-behind variants: an upper bound,
their write overlaps the next generation's scoring, which is long for the ResNet).

{head} predicted ResNet loop / scorer (wall) | predicted (CPU) |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(_rows(res_b, budget_b, (resnet_ms, resnet_cpu)))}

## Where a generation's wall time goes (cheap scorer, store on disk, write_behind=False, {budget_b} presentations)

| part | wall ms per generation |
|---|---|
{chr(10).join(f'| {k} | {v:.2f} |' for k, v in prof.items())}
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
