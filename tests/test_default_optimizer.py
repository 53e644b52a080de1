"""The default optimizer against pycma under noise, and the exactness of its resume with every mechanism
it has (issue 19): exploration, the sphere search, noisy snapshots and incumbent, start codes, and the
plausibility penalty's state."""
import numpy as np
import pytest

import xdream_ts
from xdream_ts.targets import TargetSpec


def _reported_clean(optimizer: str, seed: int) -> float:
    """Clean activation of the series a run REPORTS (the default's incumbent; cmaes: its best observed)."""
    spec = TargetSpec(kind="simulated", length=128, neuron_seed=seed, noise="gain:0.5", noise_seed=seed)
    r = xdream_ts.run("basis:16", spec, optimizer, budget=1500, seed=seed, progress=False)
    return float(r.clean_objective[r.reported_index])


def test_default_beats_cmaes_on_a_simulated_neuron_under_gain_noise():
    """8 neurons x seeds, gain noise sigma 0.5, 1,500 presentations, the same seeds for both. Measured when
    written: default ahead on 6 of 8, by 5 % on average (0.96 to 1.13 per seed). The margin is what the
    default holds against pycma on neurons that both nearly saturate; on models
    (experiments/results/default_unseen.md) it is measured at 3,000 presentations."""
    d = np.array([_reported_clean("default", s) for s in range(8)])
    c = np.array([_reported_clean("cmaes", s) for s in range(8)])
    ratio = d / c
    assert ratio.mean() > 1.03, ratio
    assert (ratio > 1).sum() >= 6, ratio
    # paired: the mean log-ratio is clearly above zero (one-sided t statistic)
    lr = np.log(ratio)
    assert lr.mean() / (lr.std(ddof=1) / np.sqrt(len(lr))) > 1.9, ratio


class _Crash(Exception):
    pass


def interrupted_and_resumed(run_kwargs, store, at_generation: int):
    """The same run (same budget: the default's step decay follows it) killed after ``at_generation``
    generations, as a crash would stop it, then resumed from its store."""
    def crash(generation, presentations, best):
        if generation >= at_generation:
            raise _Crash
    with pytest.raises(_Crash):
        xdream_ts.run(**run_kwargs, store=store, callback=crash)
    return xdream_ts.run(**run_kwargs, store=store, resume=True)


def assert_same_run(a, b):
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.objective, b.objective)
    assert a.reported_index == b.reported_index
    assert a.incumbent == b.incumbent


@pytest.mark.parametrize("noise", ["none", "gain:0.5", "poisson:1"])
def test_resume_of_the_default_is_bit_identical(tmp_path, noise):
    # budget 1200: exploration (the first 15 %), the sphere search, and under noise the snapshots (every 10
    # generations) and the incumbent's re-measurements all happen on both sides of the interruption
    kw = dict(decoder="basis:8", scorer=TargetSpec(kind="simulated", length=64, neuron_seed=1, noise=noise,
                                                   noise_seed=3), optimizer="default", budget=1200, seed=5,
              progress=False)
    whole = xdream_ts.run(**kw, store=tmp_path / "a.zarr")
    assert_same_run(whole, interrupted_and_resumed(kw, tmp_path / "b.zarr", at_generation=13))


def _tiny_data(tmp_path, L=48, n=120):
    rng = np.random.default_rng(0)
    t = np.arange(L) / L
    X = np.sin(2 * np.pi * (rng.uniform(1, 4, (n, 1)) * t + rng.uniform(0, 1, (n, 1))))
    X += 0.2 * rng.standard_normal((n, L))
    X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    np.save(tmp_path / "real.npy", X.astype(np.float32))
    return tmp_path / "real.npy"


def _tiny_model(tmp_path, L=48):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal((4, 1, 5)) / 5 ** 0.5).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "wl"),
             numpy_helper.from_array(np.zeros(2, np.float32), "bl")]
    nodes = [helper.make_node("Conv", ["series", "w", "b"], ["conv"], pads=[2, 2]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["feat"]),
             helper.make_node("Gemm", ["feat", "wl", "bl"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 1, L])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    return tmp_path / "tiny.onnx"


@pytest.mark.parametrize("plausible", [None, 0.95])
def test_resume_of_the_default_from_data_and_under_plausibility_is_bit_identical(tmp_path, plausible):
    # start codes (the encoded best real series, from --data) and the plausibility penalty's adaptive weight
    spec = TargetSpec(model=str(_tiny_model(tmp_path)), units=["logits:0"], data=str(_tiny_data(tmp_path)))
    kw = dict(decoder="auto", scorer=spec, optimizer="default", budget=600, seed=2, progress=False,
              **({"plausible": plausible} if plausible else {}))
    whole = xdream_ts.run(**kw, store=tmp_path / "a.zarr")
    assert "init_info" in whole.config
    assert_same_run(whole, interrupted_and_resumed(kw, tmp_path / "b.zarr", at_generation=7))
