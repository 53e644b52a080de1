"""Inverse-set sampling: every sample really in range, the known inverse set covered, diversity above
what a plain optimizer run visits, exact presentation counts with noise, storage, CLI, errors.

The targets are real and small: the simulated linear-nonlinear neuron (its inverse set is a slab
between two hyperplanes, known in closed form), a tiny two-layer conv net in torch (with the
``torch_forward`` method the gradient path relies on), and a tiny ONNX model built with onnx.helper
for the CLI.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from xdream_ts.adapters.simulated import PoissonNoise, SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.decoders.identity import IdentityDecoder
from xdream_ts.errors import UserError
from xdream_ts.inverse_set import (baseline_from_run, diversity, inverse_set, load_inverse_set,
                                   parse_constraints, select_diverse)

L = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the machine is shared: tiny models gain nothing from several threads
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TorchLN(SimulatedNeuron):
    """The simulated neuron with a torch forward (a private differentiable target for the tests)."""

    def torch_forward(self, x):
        import torch
        w = torch.as_tensor(self.weights.reshape(-1), dtype=x.dtype, device=x.device)
        return (self.gain * torch.relu(x.reshape(len(x), -1) @ w / np.sqrt(w.numel())))[:, None]


class TinyConv:
    """conv(1->4, k7) -> relu -> conv(4->4, k5) -> relu; targets: the 4 units of layer 2 at the centre,
    then the 4 units of layer 1 at the centre. numpy __call__ for scoring, torch_forward for gradients."""

    def __init__(self, length: int = L, seed: int = 0, keep: list | None = None):
        import torch
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(4, 1, 7, generator=g) / 7 ** 0.5
        self.b1 = torch.randn(4, generator=g) * 0.1
        self.w2 = torch.randn(4, 4, 5, generator=g) / 20 ** 0.5
        self.b2 = torch.randn(4, generator=g) * 0.1
        self.length = length
        self.target_names = [f"l2:{u}" for u in range(4)] + [f"l1:{u}" for u in range(4)]
        self.keep = keep  # a subset of the targets (None: all eight)
        if keep is not None:
            self.target_names = [self.target_names[k] for k in keep]

    def torch_forward(self, x):
        import torch.nn.functional as F
        h1 = F.relu(F.conv1d(x.reshape(len(x), 1, -1), self.w1, self.b1, padding=3))
        h2 = F.relu(F.conv1d(h1, self.w2, self.b2, padding=2))
        c = x.shape[-1] // 2
        out = torch_cat([h2[:, :, c], h1[:, :, c]])
        return out if self.keep is None else out[:, self.keep]

    def __call__(self, series):
        import torch
        with torch.no_grad():
            out = self.torch_forward(torch.as_tensor(np.asarray(series, np.float32))).double().numpy()
        return out[:, 0] if out.shape[1] == 1 else out  # (n,) for one target, the protocol's convention


def torch_cat(parts):
    import torch
    return torch.cat(parts, dim=1)


def orthogonal_directions(w: np.ndarray, k: int, seed: int = 5) -> np.ndarray:
    """k random unit directions orthogonal to w and to the constant (invisible after z-normalisation)."""
    U = np.random.default_rng(seed).standard_normal((k, len(w)))
    U -= U.mean(axis=1, keepdims=True)
    U -= (U @ w)[:, None] * w
    return U / np.linalg.norm(U, axis=1, keepdims=True)


def random_znormalised(n: int, seed: int = 9) -> np.ndarray:
    return IdentityDecoder(L)(np.random.default_rng(seed).standard_normal((n, L)))


# ---------------------------------------------------------------------------------------------------
# The known inverse set: a slab of the linear-nonlinear neuron
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["free", "gradient"])
def test_samples_lie_in_range_and_cover_the_slab(method):
    neuron = TorchLN(length=L, seed=1)  # gain 10: activation = 10 * max(0, <w, x> / sqrt(L))
    z1, z2 = 4.0, 6.0
    inv = inverse_set(IdentityDecoder(L), neuron, (z1, z2), n=150, method=method, seed=0, progress=False)
    assert inv.method == method and len(inv) == 150
    # every sample re-scored by the scorer itself lies in range, and is what the set reports
    a = neuron(inv.series)
    assert np.all((a >= z1) & (a <= z2))
    np.testing.assert_allclose(inv.activations[:, 0], a)
    # in the slab: the projection on the filter is fixed by the range ...
    w = neuron.weights
    drive = inv.series.astype(np.float64) @ w / np.sqrt(L)
    assert drive.min() >= z1 / 10 - 1e-6 and drive.max() <= z2 / 10 + 1e-6
    # ... and it spreads along directions orthogonal to the filter like random z-normalised series do
    # (a uniform sample of the slab has (1 - c^2) ~ 0.75 of their variance there)
    U = orthogonal_directions(w, 30)
    var_set = (inv.series.astype(np.float64) @ U.T).var(axis=0).mean()
    var_random = (random_znormalised(500) @ U.T).var(axis=0).mean()
    assert var_set > 0.35 * var_random, (var_set, var_random)
    # not a few points repeated: nearly every pair of samples is far apart
    assert inv.diversity > 0.5 * diversity(random_znormalised(150))


def test_gradient_path_is_the_papers_two_phases():
    neuron = TorchLN(length=L, seed=2)
    inv = inverse_set(IdentityDecoder(L), neuron, (3.0, 5.0), n=60, method="gradient", seed=1, progress=False,
                      n_seeds=8)
    info = inv.info
    assert info["seeds"] == 8 and info["seeds_all_feasible"]
    # the fast sampler produced the rest, one gradient step each, and counted every forward pass
    assert info["fast_steps_accepted"] == 60 - 8
    assert inv.presentations >= info["seed_steps"] * 8 + info["fast_steps_tried"] * 2


# ---------------------------------------------------------------------------------------------------
# Intersections of inverse sets (the paper's Fig. 4 and 5)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["free", "gradient"])
def test_intersection_of_units_of_one_and_of_two_layers(method):
    net = TinyConv()
    other = TorchLN(length=L, seed=3)  # a second scorer: a unit "of another model"
    ref = net(random_znormalised(300))
    # ranges each unit reaches on random series, well above their typical value
    r1 = np.quantile(ref[:, 1], [0.8, 0.99])
    r5 = np.quantile(ref[:, 5], [0.6, 0.95])
    cons = [(1, *r1), ("l1:1", *r5), (other, 0, 1.0, 3.0)]
    inv = inverse_set(IdentityDecoder(L), net, cons, n=40, method=method, seed=0, progress=False)
    assert len(inv) == 40 and inv.activations.shape == (40, 3)
    a, b = net(inv.series), other(inv.series)
    assert np.all((a[:, 1] >= r1[0]) & (a[:, 1] <= r1[1]))
    assert np.all((a[:, 5] >= r5[0]) & (a[:, 5] <= r5[1]))
    assert np.all((b >= 1.0) & (b <= 3.0))
    assert [c.name for c in inv.constraints][:2] == ["l2:1", "l1:1"]


# ---------------------------------------------------------------------------------------------------
# Diversity against the baseline: the in-range series a plain optimizer run visits
# ---------------------------------------------------------------------------------------------------
def test_sampler_is_more_diverse_than_what_an_optimizer_run_visits():
    from xdream_ts import run
    unit = TinyConv(keep=[1])  # one target: the run maximises it
    dec = BasisDecoder(L, 16)
    r = run(dec, unit, "genetic", budget=1000, seed=0, progress=False)
    top = float(np.nanmax(r.objective))
    rng_ = (0.8 * top, 1.0 * top)  # where the run spends most of its presentations
    base = baseline_from_run(r, rng_)
    assert base.presentations == 1000 and len(base) >= 2
    assert np.all((unit(base.series) >= rng_[0]) & (unit(base.series) <= rng_[1]))
    inv = inverse_set(dec, unit, rng_, n=100, method="free", seed=0, budget=1000, progress=False)
    assert len(inv) == 100 and inv.presentations <= base.presentations
    assert inv.diversity > 1.3 * base.diversity, (inv.diversity, base.diversity)
    # the same run read at the sampler's presentations: a prefix of whole generations (population 20)
    early = baseline_from_run(r, rng_, max_presentations=inv.presentations)
    assert early.presentations == inv.presentations // 20 * 20 and len(early) <= len(base)


# ---------------------------------------------------------------------------------------------------
# Noisy targets: presentations as the loop counts them, feasibility on the mean, stated confidence
# ---------------------------------------------------------------------------------------------------
def test_noisy_target_counts_presentations_and_states_confidence():
    noisy = PoissonNoise(SimulatedNeuron(length=L, seed=1), scale=20.0, seed=3)
    R = 4
    inv = inverse_set(IdentityDecoder(L), noisy, (4.0, 6.0), n=60, method="auto", repeats=R, budget=4000, seed=0,
                      progress=False)
    assert inv.method == "free"  # noisy: no gradients
    assert inv.presentations == inv.info["n_evaluated"] * R <= 4000
    assert inv.observed.shape == (len(inv), R, 1)
    np.testing.assert_allclose(inv.activations[:, 0], inv.observed[:, :, 0].mean(axis=1))
    assert np.all((inv.activations >= 4.0) & (inv.activations <= 6.0))  # judged on the mean
    p = inv.p_in_range
    assert np.all((p >= 0) & (p <= 1)) and np.all(inv.ci_low <= inv.activations)
    # the stated probability is about right: compare with the clean (true) activations
    truly = inv.truly_in_range
    assert abs(truly.mean() - p.mean()) < 0.2, (truly.mean(), p.mean())
    # demanding confidence accepts only samples that are surely in range
    sure = inverse_set(IdentityDecoder(L), noisy, (4.0, 6.0), n=30, repeats=R, seed=1, progress=False,
                       min_confidence=0.9)
    assert np.all(sure.p_in_range >= 0.9) and sure.truly_in_range.mean() >= truly.mean() - 0.05


def test_budget_bounds_the_search_and_an_unreachable_range_returns_nothing():
    neuron = SimulatedNeuron(length=L, seed=1)
    with pytest.warns(RuntimeWarning, match="found 0 of 10"):
        inv = inverse_set(IdentityDecoder(L), neuron, (20.0, 30.0), n=10, budget=300, progress=False)  # max is 10
    assert len(inv) == 0 and inv.presentations == 300
    with pytest.warns(RuntimeWarning, match="of 500"):
        few = inverse_set(IdentityDecoder(L), neuron, (2.0, 4.0), n=500, budget=200, progress=False)
    assert 0 < len(few) < 500 and few.presentations <= 200


# ---------------------------------------------------------------------------------------------------
# Storage, gallery, helpers
# ---------------------------------------------------------------------------------------------------
def test_store_round_trip_and_gallery(tmp_path):
    import zarr
    noisy = PoissonNoise(SimulatedNeuron(length=L, seed=1), scale=20.0, seed=0)
    out = tmp_path / "inv.zarr"
    inv = inverse_set(IdentityDecoder(L), noisy, (4.0, 6.0), n=30, repeats=2, out=out, seed=0, progress=False)
    back = load_inverse_set(out)
    np.testing.assert_array_equal(back.series, inv.series)
    np.testing.assert_array_equal(back.codes, inv.codes)
    np.testing.assert_array_equal(back.activations, inv.activations)
    assert back.method == "free" and back.presentations == inv.presentations
    assert back.constraints[0]["z1"] == 4.0 and back.constraints[0]["z2"] == 6.0
    np.testing.assert_array_equal(back.clean_activations, inv.clean_activations)
    np.testing.assert_array_equal(back.observed, inv.observed)
    np.testing.assert_array_equal(back.p_in_range, inv.p_in_range)
    assert abs(back.diversity - inv.diversity) < 1e-3  # features stored as float32
    g = zarr.open_group(str(out), mode="r")
    assert g.metadata.zarr_format == 3 and g.attrs["format"] == "xdream_ts.inverse_set/1"
    png = (out / "gallery.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with pytest.raises(UserError, match="already exists"):
        inv.save(out)


def test_diversity_and_diverse_selection():
    f = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    assert diversity(f) == pytest.approx((5 + 8 + 5) / 3)
    pts = np.concatenate([np.zeros((50, 2)), [[10.0, 0.0], [0.0, 10.0]]])
    chosen = select_diverse(pts, 3, seed=0)
    assert {50, 51} <= set(chosen.tolist())


def test_constraint_forms_and_user_errors():
    net = TinyConv()
    assert len(parse_constraints((1.0, 2.0), net)) == 1
    assert parse_constraints((3, 1.0, 2.0), net)[0].target == 3
    assert parse_constraints([("l1:2", 0.0, 1.0), (0, 1.0, 2.0)], net)[0].target == 6
    dec = IdentityDecoder(L)
    for bad, msg in [((2.0, 1.0), "below"), ((np.nan, 1.0), "finite"), (("nope", 0.0, 1.0), "not one of"),
                     ((99, 0.0, 1.0), "out of range")]:
        with pytest.raises(UserError, match=msg):
            inverse_set(dec, net, bad, n=5, budget=100, progress=False)
    with pytest.raises(UserError, match="gradient"):
        inverse_set(dec, SimulatedNeuron(length=L), (1.0, 2.0), n=5, method="gradient", progress=False)
    with pytest.raises(UserError, match="noisy"):
        inverse_set(dec, PoissonNoise(TorchLN(length=L)), (1.0, 2.0), n=5, method="gradient", progress=False)
    with pytest.raises(UserError, match="unknown method"):
        inverse_set(dec, net, (1.0, 2.0), method="mcmc", progress=False)
    with pytest.raises(UserError, match="repeats >= 2"):
        inverse_set(dec, net, (1.0, 2.0), min_confidence=0.9, progress=False)


# ---------------------------------------------------------------------------------------------------
# CLI on a real (tiny) ONNX model
# ---------------------------------------------------------------------------------------------------
def _tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 1, 7)) / 7 ** 0.5).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [helper.make_node("Conv", ["series", "w", "b"], ["conv"], pads=[3, 3], name="conv"),
             helper.make_node("Relu", ["conv"], ["block/out"], name="relu"),
             helper.make_node("GlobalAveragePool", ["block/out"], ["pool"], name="pool"),
             helper.make_node("Flatten", ["pool"], ["gap"], name="flatten")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("series", TensorProto.FLOAT, ["batch", 1, L])],
                              [helper.make_tensor_value_info("gap", TensorProto.FLOAT, ["batch", 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_cli_inverse_set_on_an_onnx_model(tmp_path, capsys):
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    from xdream_ts.cli import main
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    scorer = OnnxScorer(model, Target("block/out", 1, "center"))
    ref = scorer(random_znormalised(300))
    z1, z2 = (float(v) for v in np.quantile(ref, [0.7, 0.95]))
    out = tmp_path / "inv.zarr"
    rc = main(["inverse-set", "--model", str(model), "--layer", "block/out", "--unit", "1", "--range", str(z1), str(z2),
               "--n", "40", "--out", str(out), "--decoder", "identity", "--features", "gap", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "40 of 40 by free" in printed and "gap" in printed
    inv = load_inverse_set(out)
    a = scorer(inv.series)
    assert np.all((a >= z1) & (a <= z2)) and inv.features.shape == (40, 4)
    assert (out / "gallery.png").is_file()
    # the stored config rebuilds the same target (spec -> store -> spec)
    from xdream_ts.targets import TargetSpec, build
    spec = TargetSpec.from_config(inv.config)
    assert spec.model == str(model) and [str(u) for u in spec.units] == ["block/out:1@center"]
    np.testing.assert_array_equal(build(spec).clean(inv.series), a)
    # an intersection: a second unit of the model with its own range
    two = OnnxScorer(model, [Target("block/out", 1, "center"), Target("block/out", 2, "center")])
    r2 = np.quantile(two(random_znormalised(300))[:, 1], [0.5, 0.95])
    out2 = tmp_path / "both.zarr"
    rc = main(["inverse-set", "--model", str(model), "--layer", "block/out", "--unit", "1", "--range", str(z1), str(z2),
               "--also", "block/out:2@center", str(r2[0]), str(r2[1]), "--n", "10", "--out", str(out2),
               "--decoder", "identity", "--no-progress", "--json"])
    assert rc == 0 and '"n": 10' in capsys.readouterr().out
    a2 = two(load_inverse_set(out2).series)
    assert np.all((a2[:, 0] >= z1) & (a2[:, 0] <= z2) & (a2[:, 1] >= r2[0]) & (a2[:, 1] <= r2[1]))
    # errors are one line and exit code 2, and never overwrite
    rc = main(["inverse-set", "--model", str(model), "--range", "0", "1", "--out", str(out)])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    rc = main(["inverse-set", "--model", str(model), "--layer", "block/out", "--range", "1", "0", "--out",
               str(tmp_path / "x.zarr"), "--decoder", "identity", "--method", "free"])
    err = capsys.readouterr().err
    assert rc == 2 and "below" in err and err.count("\n") == 1


def test_import_stays_light():
    code = ("import sys, xdream_ts.inverse_set; "
            "print(','.join(m for m in ('torch', 'scipy', 'matplotlib', 'onnxruntime', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_cli_inverse_set_with_the_models_data_is_relative_to_their_best(tmp_path, capsys):
    from xdream_ts.adapters.onnx import OnnxScorer, Target
    from xdream_ts.cli import main
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    X = random_znormalised(200)
    np.save(tmp_path / "real.npy", X)
    best = float(OnnxScorer(model, Target("block/out", 1, "center"))(X).max())
    out = tmp_path / "inv.zarr"
    rc = main(["inverse-set", "--model", str(model), "--layer", "block/out", "--unit", "1", "--relative",
               "--range", "0.8", "1.0", "--data", str(tmp_path / "real.npy"), "--n", "10", "--out", str(out),
               "--no-progress", "--method", "free"])
    assert rc == 0, capsys.readouterr().err
    inv = load_inverse_set(out)
    a = OnnxScorer(model, Target("block/out", 1, "center"))(inv.series)
    assert np.all((a >= 0.8 * best - 1e-6) & (a <= best + 1e-6))  # the range is relative to the data's best
