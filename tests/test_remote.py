"""RemoteScorer against a real HTTP server on 127.0.0.1 that fails on cue (tests/stub_server.py).

Every fault has its outcome asserted: the scores, the NaN count, the retries made, the run store
intact, and a resumed run that continues once the endpoint is back.
"""
import email.utils
import functools
import json
import logging
import time

import numpy as np
import pytest
import zarr

import xdream_ts
from xdream_ts.adapters.remote import RemoteScorer, parse_retry_after
from xdream_ts.adapters.simulated import SimulatedNeuron
from xdream_ts.decoders.basis import BasisDecoder
from xdream_ts.errors import UserError

from stub_server import StubServer

L = 48
FAST = {"backoff": 0.01, "timeout": (5.0, 10.0)}  # retries in milliseconds; timeouts only as a safety net


@pytest.fixture
def neuron():
    return SimulatedNeuron(length=L, seed=3)


def _series(n, seed=0):
    return BasisDecoder(L, n_basis=6)(np.random.default_rng(seed).standard_normal((n, 6)))


@functools.lru_cache(maxsize=None)
def _local_objective(budget):
    """The objective of the uninterrupted local run (neuron seed 3), computed once per budget."""
    return _run(SimulatedNeuron(length=L, seed=3), budget=budget).objective


def _run(scorer, store=None, budget=80, resume=False):
    return xdream_ts.run(BasisDecoder(L, n_basis=6), scorer, "genetic", budget=budget, seed=1, store=store,
                         resume=resume, progress=False)


# ---------------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------------
def test_v2_scores_match_the_local_target_in_batches(neuron):
    x = _series(20)
    with StubServer(neuron) as srv, RemoteScorer(srv.url, model="neuron", max_batch=7, **FAST) as sc:
        assert sc.length == L  # asked from the model's metadata
        scores = sc(x)
        np.testing.assert_allclose(scores, neuron(x), rtol=0, atol=1e-12)
        assert srv.batches == [7, 7, 6] and sc.requests == 3 and sc.retries == 0 and sc.missing == 0
        both = RemoteScorer(srv.url, model="neuron", unit=[0, 1], **FAST)
        two = both(x)
        assert two.shape == (20, 2) and both.target_names == ["neuron:0", "neuron:1"]
        np.testing.assert_allclose(two[:, 0], neuron(x), atol=1e-12)
        assert (two.min(axis=1) == 0).all()  # unit 1 is the opposite rectifier
        r = xdream_ts.run(BasisDecoder(L, n_basis=6), both, "genetic", budget=40, progress=False)
        assert r.scores.shape == (2, 20, 1, 2)  # both units stored; their sum is what the optimizer was told
        np.testing.assert_allclose(r.objective, r.scores[:, :, 0].sum(axis=-1), atol=1e-12)
        both.close()


def test_json_mode_fills_the_template_and_follows_the_path(neuron):
    x = _series(5)
    with StubServer(neuron) as srv:
        sc = RemoteScorer(srv.url + "/predict", mode="json", request_template='{"series": "$series", "v": 1}',
                          scores_path="result.scores", unit=1, **FAST)
        two = RemoteScorer(srv.url + "/predict", mode="json", scores_path="result.scores", **FAST)
        np.testing.assert_allclose(two(x), neuron(x), atol=1e-12)
        assert (np.minimum(sc(x), two(x)) == 0).all()
    with pytest.raises(UserError, match=r"\$series"):
        RemoteScorer("http://127.0.0.1:1/p", mode="json", request_template={"x": 1})


def test_configuration_mistakes_are_one_line_user_errors(monkeypatch):
    for kwargs, pattern in [({"url": "ftp://x"}, "http"), ({"url": "http://h:1"}, "model name"),
                            ({"url": "http://h:1", "model": "m", "mode": "grpc"}, "mode"),
                            ({"url": "http://h:1", "model": "m", "unit": -1}, "unit"),
                            ({"url": "http://h:1", "model": "m", "max_batch": 0}, "max_batch")]:
        with pytest.raises(UserError, match=pattern) as info:
            RemoteScorer(**kwargs)
        assert "\n" not in str(info.value)
    monkeypatch.delenv("XDTS_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(UserError, match="XDTS_NO_SUCH_TOKEN is not set"):
        RemoteScorer("http://127.0.0.1:1", model="m", token_env="XDTS_NO_SUCH_TOKEN")


def test_unreachable_endpoint_check_is_one_line():
    with StubServer(SimulatedNeuron(length=L)) as srv:
        port = srv.port
    with pytest.raises(UserError, match=f"127.0.0.1:{port} is not reachable"):
        RemoteScorer(f"http://127.0.0.1:{port}", model="neuron", **FAST).check()


# ---------------------------------------------------------------------------------------------------
# Faults, each in a real run with a store
# ---------------------------------------------------------------------------------------------------
def test_500s_are_retried_and_the_run_equals_a_local_one(neuron, tmp_path):
    local = _run(neuron)
    with StubServer(neuron, script=[("status", 500), ("status", 502), "ok", ("status", 500)]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", max_batch=8, **FAST)
        r = _run(sc, store=tmp_path / "r.zarr")
    assert sc.retries == 3 and sc.missing == 0 and sc.retry_reasons == {"HTTP 500": 2, "HTTP 502": 1}
    np.testing.assert_allclose(r.objective, local.objective, atol=1e-12)
    assert xdream_ts.load_run(tmp_path / "r.zarr").summary()["missing_responses"] == 0
    assert "3 retries" in sc.report() and "no series lost" in sc.report()


def test_503_retry_after_is_honoured_in_seconds_and_as_http_date(neuron):
    x = _series(4)
    hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    with StubServer(neuron, script=[("status", 503, {"Retry-After": "3600"}),
                                    ("status", 429, {"Retry-After": hour})]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", max_retry_after=0.3, **FAST)
        t0 = time.perf_counter()
        np.testing.assert_allclose(sc(x), neuron(x), atol=1e-12)
        capped = time.perf_counter() - t0
    # Both headers were read (a jittered backoff would take ~0.01 s) and capped: a server cannot park
    # the run for an hour.
    assert 0.55 <= capped < 6.0 and sc.retries == 2 and sc.retry_reasons == {"HTTP 503": 1, "HTTP 429": 1}
    with StubServer(neuron, script=[("status", 503, {"Retry-After": "1"})]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", **FAST)
        t0 = time.perf_counter()
        sc(x)
        assert time.perf_counter() - t0 >= 1.0 and sc.retries == 1  # within the cap it is obeyed
    assert parse_retry_after("7") == 7.0 and parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert 99 < parse_retry_after(email.utils.formatdate(1000.0, usegmt=True), now=900.0) <= 100
    assert parse_retry_after(email.utils.formatdate(800.0, usegmt=True), now=900.0) == 0.0


def test_read_timeout_is_retried(neuron):
    x = _series(3)
    # Generous margins: a loaded CI machine must not turn a normal reply into a timeout.
    with StubServer(neuron, script=[("sleep", 3.0)]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", timeout=(2.0, 1.0), backoff=0.01)
        np.testing.assert_allclose(sc(x), neuron(x), atol=1e-12)
    assert sc.retries == 1 and sc.retry_reasons == {"timeout": 1} and sc.missing == 0


# Each fault hits request 4: generation 1, series 8-15 (population 20 in batches of 8).
FAULTS = [  # (action, retries made, series lost, failure reason)
    (("status", 500), 1, 0, None),
    (("status", 503, {"Retry-After": "0"}), 1, 0, None),
    (("sleep", 3.0), 1, 0, None),                       # read timeout 1 s
    ("drop", 1, 0, None),                               # connection closed without a reply
    ("malformed", 0, 8, "malformed JSON"),
    ("wrong_shape", 0, 8, "wrong shape"),
    ("nan", 0, 1, "non-finite score"),
]


@pytest.mark.parametrize("fault,retries,lost,reason", FAULTS,
                         ids=[f if isinstance(f, str) else "-".join(map(str, f[:2])) for f, *_ in FAULTS])
def test_each_fault_in_a_run_with_a_store_then_resume(neuron, tmp_path, fault, retries, lost, reason):
    store = tmp_path / "r.zarr"
    with StubServer(neuron, script=["ok"] * 4 + [fault]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", max_batch=8, timeout=(2.0, 1.0), backoff=0.01)
        r = _run(sc, store=store, budget=60)
    assert sc.retries == retries and sc.missing == lost
    assert sc.failures == ({reason: lost} if reason else {})
    g = zarr.open_group(str(store), mode="r")
    scores = g["scores"][:]
    assert g.attrs["generations_completed"] == 3 and g.attrs["complete"] is True
    assert np.isnan(scores).sum() == lost == r.summary()["missing_responses"]
    assert np.isnan(scores[1, 8:8 + lost]).all()
    before = {k: g[k][:] for k in ("codes", "scores", "objective")}
    # The stored run is intact and continues with a larger budget once the endpoint is healthy.
    with StubServer(neuron) as back:
        more = _run(RemoteScorer(back.url, model="neuron", max_batch=8, **FAST), store=store, budget=100, resume=True)
    assert more.complete and more.presentations == 100 and more.generations == 5
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(more, k)[:3], v)
    if not lost:  # retried faults leave no trace: the run equals one that never met them
        np.testing.assert_allclose(more.objective, _local_objective(100), atol=1e-12)


def test_retries_exhausted_on_5xx_give_nan_not_a_stop(neuron, tmp_path):
    with StubServer(neuron, script=["ok"] * 3 + [("status", 503)] * 3) as srv:
        sc = RemoteScorer(srv.url, model="neuron", max_batch=8, retries=2, **FAST)
        r = _run(sc, store=tmp_path / "r.zarr", budget=60)
    assert sc.retries == 2 and sc.missing == 8 and sc.failures == {"HTTP 503 after 2 retries": 8}
    assert r.complete and r.summary()["missing_responses"] == 8


def test_other_4xx_stop_at_once_with_the_servers_message(neuron, tmp_path):
    with StubServer(neuron, script=[("status", 400, {}, {"error": "input 'series' has shape [3, 47]"})]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", **FAST)
        with pytest.raises(UserError) as info:
            sc(_series(3))
    msg = str(info.value)
    assert "HTTP 400" in msg and "has shape [3, 47]" in msg and "\n" not in msg
    assert sc.retries == 0 and sc.requests == 1


def test_endpoint_that_dies_mid_run_stops_cleanly_and_resume_continues(neuron, tmp_path):
    store = tmp_path / "r.zarr"
    reference = _local_objective(100)
    # 20 per generation in batches of 5: the server dies after 9 requests (the first of generation 2).
    srv = StubServer(neuron, die_after=9)
    sc = RemoteScorer(srv.url, model="neuron", max_batch=5, retries=2, down_after=2, **FAST)
    with pytest.raises(UserError) as info:
        _run(sc, store=store, budget=100)
    msg = str(info.value)
    assert srv.url in msg and "--resume" in msg and "intact" in msg and "\n" not in msg
    assert sc.retries == 4 and sc.failures and all("after 2 retries" in k for k in sc.failures)
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["generations_completed"] == 2 and g.attrs["complete"] is False  # 0 and 1 kept, 2 not
    np.testing.assert_allclose(g["objective"][:2], reference[:2], atol=1e-12)
    # The endpoint comes back on the same address: resume continues as if nothing happened.
    with StubServer(neuron, port=srv.port) as back:
        sc2 = RemoteScorer(back.url, model="neuron", max_batch=5, **FAST)
        r = _run(sc2, store=store, budget=100, resume=True)
    assert r.complete and r.presentations == 100 and sc2.missing == 0
    np.testing.assert_allclose(r.objective, reference, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# The token
# ---------------------------------------------------------------------------------------------------
def test_token_is_sent_but_never_shown_logged_or_stored(neuron, tmp_path, monkeypatch, caplog, capsys):
    token = "s3cr3t-T0KEN-4242"
    monkeypatch.setenv("XDTS_TEST_TOKEN", token)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    with StubServer(neuron, token=token, script=[("status", 503)]) as srv:
        sc = RemoteScorer(srv.url, model="neuron", token_env="XDTS_TEST_TOKEN", **FAST)
        _run(sc, store=tmp_path / "r.zarr", budget=40)
        assert srv.auth_headers and all(h == f"Bearer {token}" for h in srv.auth_headers)
        monkeypatch.setenv("XDTS_TEST_TOKEN", "wrong")
        bad = RemoteScorer(srv.url, model="neuron", token_env="XDTS_TEST_TOKEN", **FAST)
        with pytest.raises(UserError, match=r"HTTP 401.*\$XDTS_TEST_TOKEN") as info:
            bad(_series(2))
    shown = [repr(sc), json.dumps(sc.describe()), sc.report(), json.dumps(sc.stats()), str(info.value),
             caplog.text, "\n".join(srv.log), *capsys.readouterr()]
    assert all(token not in s for s in shown)
    assert "HTTP Request: POST" in caplog.text  # the logs were captured, and they hold no token
    for p in (tmp_path / "r.zarr").rglob("*"):
        if p.is_file():
            assert token.encode() not in p.read_bytes(), p
    run = xdream_ts.load_run(tmp_path / "r.zarr")  # decompressed content too: config and every state
    assert token not in json.dumps(run.config)
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    assert all(token not in s for s in g["state"][:].tolist())


# ---------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------
def test_cli_runs_against_an_endpoint_and_reports_it(neuron, tmp_path, capsys):
    from xdream_ts.cli import main
    out = tmp_path / "cli.zarr"
    argv = ["run", "--decoder", "basis:6", "--optimizer", "genetic", "--budget", "40", "--out", str(out),
            "--no-progress", "--timeout", "5", "--max-batch", "16"]
    with StubServer(neuron, script=[("status", 503)]) as srv:
        assert main([*argv, "--endpoint", srv.url, "--remote-model", "neuron"]) == 0
    text = capsys.readouterr().out
    assert "remote " + srv.url in text and "1 retries" in text and "no series lost" in text
    run = xdream_ts.load_run(out)
    assert run.complete and run.config["scorer"]["max_batch"] == 16 and run.series.shape[-1] == L
    # down now: one line on stderr, exit code 2, the store untouched
    assert main([*argv[:-4], "--out", str(tmp_path / "b.zarr"), "--endpoint", srv.url, "--remote-model", "neuron"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not reachable" in err and not (tmp_path / "b.zarr").exists()


def test_tls_is_verified_by_default(neuron, tmp_path):
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (it makes the test's self-signed certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    x = _series(3)
    with StubServer(neuron, tls=(str(cert), str(key))) as srv:
        assert srv.url.startswith("https://")
        with pytest.raises(UserError, match="not trusted") as info:
            RemoteScorer(srv.url, model="neuron", **FAST)(x)  # a self-signed certificate: refused, not retried
        assert "\n" not in str(info.value)
        with pytest.raises(UserError, match="not trusted"):
            RemoteScorer(srv.url, model="neuron", **FAST).check()
        trusted = RemoteScorer(srv.url, model="neuron", verify=str(cert), **FAST)
        np.testing.assert_allclose(trusted(x), neuron(x), atol=1e-12)
        assert trusted.retries == 0


def test_an_endpoint_that_answers_500_to_everything_stops_the_cli_run_and_resume_continues(neuron, tmp_path, capsys):
    # The issue: a 3,000-presentation search against such a server ran 271 s, recorded 3,000 missing
    # responses and exited 0. Retry-After: 0 keeps the test quick (the retries are still made).
    from xdream_ts.cli import main
    out = tmp_path / "r.zarr"
    argv = ["run", "--decoder", "basis:6", "--optimizer", "genetic", "--budget", "3000", "--out", str(out),
            "--no-progress", "--timeout", "5", "--max-batch", "16", "--remote-model", "neuron"]
    always_500 = [("status", 500, {"Retry-After": "0"}, {"error": "model crashed: CUDA out of memory"})] * 1000
    srv = StubServer(neuron, script=always_500)
    t0 = time.perf_counter()
    assert main([*argv, "--endpoint", srv.url]) == 2
    assert time.perf_counter() - t0 < 30
    srv.stop()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert srv.url in err and "no valid score" in err and "HTTP 500" in err and "CUDA out of memory" in err
    assert "--resume" in err
    assert srv.n_infer == 3 * 6  # down_after=3 batches, each tried 1 + 5 retries, then nothing more
    # Generation 0 (two batches of 16 + 4) was committed, all missing; the third batch stopped the run.
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["generations_completed"] == 1 and g.attrs["complete"] is False
    assert np.isnan(g["scores"][:]).all()
    # The endpoint is fixed on the same address: the stored run continues.
    with StubServer(neuron, port=srv.port) as back:
        assert main([*argv[:6], "100", *argv[7:], "--endpoint", back.url, "--resume"]) == 0
    run = xdream_ts.load_run(out)
    assert run.complete and run.presentations == 100 and run.summary()["missing_responses"] == 20
    assert np.isfinite(run.objective[1:]).all()
