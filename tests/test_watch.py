"""The live view (xdream_ts/watch.py): /api/state against the store after every generation (through a resume,
a half-written generation, a copied store), the CLI's one-line errors, the token, a sweep, the rig's /watch,
and the page in a real headless Chromium while a run writes its store. Real zarr stores, real uvicorn on
127.0.0.1, a real browser."""
import shutil
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from xdream_ts.adapters.simulated import SimulatedNeuron, with_noise
from xdream_ts.cli import main
from xdream_ts.loop import load_run, run
from xdream_ts.store import RunStore
from xdream_ts.watch import run_state, serve


class DropSome:
    """A noisy simulated target that loses some responses (NaN), as a flaky rig does: missing responses."""

    noisy = True

    def __init__(self, scorer, share=0.1, seed=0):
        self.inner, self.share, self.rng = scorer, share, np.random.default_rng(seed)
        self.length = scorer.length

    def clean(self, series):
        return self.inner.clean(series)

    def __call__(self, series):
        out = np.asarray(self.inner(series), dtype=float)
        out[self.rng.random(len(out)) < self.share] = np.nan
        return out

    def describe(self):
        return {**self.inner.describe(), "dropped": self.share}


def target(length=64):
    return DropSome(with_noise(SimulatedNeuron(length=length), "gain:0.5", seed=0))


def api(url, **params):
    r = httpx.get(url + "api/state", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def assert_matches_store(state, path):
    """What the view says is what any reader of the committed store finds."""
    r = load_run(path)
    s = r.summary()
    assert state["generation"] == r.generations
    assert state["presentations"] == r.presentations
    assert state["budget"] == s["budget"]
    assert state["best_score"] == pytest.approx(s["best_score"])
    assert state["best_clean_score"] == pytest.approx(s["best_clean_score"])
    assert state["missing_responses"] == s["missing_responses"]
    np.testing.assert_allclose(state["trajectory"]["best_so_far"], r.best_per_generation)
    assert len(state["trajectory"]["presentations"]) == r.generations
    g, p = r.reported_index
    assert (state["stimulus"]["generation"], state["stimulus"]["member"]) == (g, p)
    np.testing.assert_allclose(state["stimulus"]["series"][0], r.series[g, p], rtol=1e-6)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "small.zarr"
    run(decoder="basis", scorer=target(), optimizer="genetic", budget=60, store=str(path), progress=False)
    return path


# ---------------------------------------------------------------------------------------------------
def test_api_state_matches_the_store_after_each_generation(tmp_path):
    path = tmp_path / "run.zarr"
    server = serve(path, port=0, block=False, wait=True)  # before the run starts: the store does not exist yet
    try:
        before = api(server.url)
        assert before["generation"] == 0 and before["stimulus"] is None and before["waiting"]
        seen = []

        def check(g, presentations, best):  # write_behind=False: generation g is committed when this runs
            state = api(server.url)
            assert state["generation"] == g and state["presentations"] == presentations
            assert state["best_score"] == pytest.approx(best)
            assert state["complete"] is False
            assert_matches_store(state, path)
            seen.append(g)

        kw = dict(decoder="basis", scorer=target(), optimizer="genetic", store=str(path), progress=False,
                  write_behind=False, callback=check)
        run(budget=100, **kw)
        assert seen == [1, 2, 3, 4, 5]
        done = api(server.url)
        assert done["complete"] is True and done["missing_responses"] > 0
        assert_matches_store(done, path)

        # a run resumed with a larger budget continues the same trajectory
        run(budget=160, resume=True, **kw)
        assert seen[5:] == [6, 7, 8]
        resumed = api(server.url)
        assert resumed["generation"] == 8 and resumed["budget"] == 160
        assert resumed["trajectory"]["best_so_far"][:5] == done["trajectory"]["best_so_far"]
        assert_matches_store(resumed, path)
    finally:
        server.stop()

    # a half-written generation (rows on disk, no commit marker: a writer killed mid-append) is never shown
    st = RunStore.open(path, mode="r+")
    g = st.generations_completed
    st.ensure_capacity(g + 1)
    st.group["objective"][g] = np.full(st.group["objective"].shape[1], 1e9)
    st.group["n_evaluated"][g] = 20
    fresh = run_state(path)
    assert fresh["generation"] == g and fresh["best_score"] < 1e9
    assert_matches_store(fresh, path)

    # a store copied from elsewhere reads the same
    copy = tmp_path / "elsewhere" / "copied.zarr"
    shutil.copytree(path, copy)
    copied = run_state(copy)
    for key in ("generation", "presentations", "best_score", "trajectory", "stimulus", "gallery", "real"):
        assert copied[key] == fresh[key], key


def test_missing_or_foreign_path_is_one_line_and_exit_2(tmp_path, capsys):
    import zarr
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["hello"] = 1
    for bad in ("nope.zarr", "folder", "file.txt", "other.zarr"):
        assert main(["watch", str(tmp_path / bad), "--port", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("xdream-ts: ") and len(err.splitlines()) == 1, err
        assert str(tmp_path / bad) in err


def test_port_in_use_is_one_line(small_store, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["watch", str(small_store), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"port {port}" in err and "in use" in err, err


def test_token_protects_the_api_not_the_page(small_store, monkeypatch):
    server = serve(small_store, port=0, block=False, token="s3cret")
    try:
        assert httpx.get(server.url).status_code == 200  # the page holds no data
        assert httpx.get(server.url + "assets/uPlot.iife.min.js").status_code == 200
        assert httpx.get(server.url + "api/state").status_code == 401
        bad = httpx.get(server.url + "api/state", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = httpx.get(server.url + "api/state", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["generation"] == 3
    finally:
        server.stop()
    monkeypatch.delenv("XDTS_WATCH_UNSET", raising=False)
    assert main(["watch", str(small_store), "--token-env", "XDTS_WATCH_UNSET"]) == 2


def test_sweep_table_and_its_runs(tmp_path):
    from xdream_ts import sweep as sw
    cfg = {"name": "tiny", "budget": 40, "seeds": 2, "decoders": ["basis"], "optimizers": ["genetic"],
           "noise": ["none"], "targets": [{"kind": "simulated", "length": 64}]}
    result = sw.sweep(cfg, tmp_path / "s", executor="serial", progress=False)
    server = serve(tmp_path / "s", port=0, block=False)
    try:
        state = api(server.url)
        assert state["kind"] == "sweep" and len(state["tasks"]) == 2
        for task in state["tasks"]:
            assert task["status"] == "done" and task["presentations"] == 40 and task["spark"]["x"]
            one = api(server.url, run=task["id"])
            assert one["task"] == task["id"]
            assert_matches_store(one, tmp_path / "s" / result.entries[task["id"]]["store"])
        assert httpx.get(server.url + "api/state", params={"run": "no-such-task"}).status_code == 404
    finally:
        server.stop()


def test_the_rig_serves_the_same_page_under_watch(tmp_path):
    import uvicorn

    from xdream_ts.rig import RigConfig, create_app
    config = RigConfig(decoder="basis", length=64, optimizer="genetic", budget=40, out=str(tmp_path / "rig.zarr"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait(lambda: server.started, what="the rig service")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as client:
            page = client.get("/watch")  # redirected to /watch/
            assert page.status_code == 200 and "/watch/assets/uPlot.iife.min.js" in page.text
            assert client.get("/watch/assets/uPlot.iife.min.js").status_code == 200
            assert client.get("/watch/api/state").json()["generation"] == 0  # no store yet: waiting
            block = client.post("/blocks", json={"max": 100}).json()
            responses = [{"id": s["id"], "value": float(np.mean(s["series"]))} for s in block["stimuli"]]
            assert client.post("/responses", json={"responses": responses}).json()["generation_complete"]
            state = client.get("/watch/api/state").json()
            assert state["generation"] == 1 and state["presentations"] == len(responses)
            assert_matches_store(state, tmp_path / "rig.zarr")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


# ---------------------------------------------------------------------------------------------------
def _browser():
    """A headless Debian Chromium driven by selenium, or a reason to skip."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("no Chromium browser and chromedriver found (Debian: apt-get install chromium chromium-driver)")
    opts = Options()
    opts.binary_location = binary
    # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def _wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# pixels of the stimulus chart drawn in the stimulus colour (uPlot draws on a canvas)
COLOURED_PIXELS = """
const c = document.querySelector('#stimulus canvas'); if (!c) return 0;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 31) < 40 && Math.abs(d[i+1] - 119) < 40
    && Math.abs(d[i+2] - 180) < 40 && d[i+3] > 100) n++;
return n;"""


def test_page_follows_a_run_in_a_real_browser(tmp_path):
    driver = _browser()
    path = tmp_path / "live.zarr"
    release = threading.Event()

    def slow(g, presentations, best):  # a slow target: the page must see the run grow
        release.wait(0.25)

    worker = threading.Thread(target=run, kwargs=dict(decoder="basis", scorer=target(), optimizer="genetic",
                                                      budget=1000, store=str(path), progress=False, callback=slow),
                              daemon=True)
    server = None
    try:
        worker.start()
        server = serve(path, port=0, block=False, wait=True, interval_s=0.3)
        driver.get(server.url)
        js = driver.execute_script
        points = lambda: js("const c = window.xdreamWatch.charts.trajectory; return c ? c.u.data[0].length : 0")
        first = _wait(lambda: points() >= 2 and points(), what="the first points of the trajectory")
        _wait(lambda: points() > first + 2, what="the trajectory to gain points")
        assert worker.is_alive(), "the run finished before the page could watch it grow"

        # the stimulus is drawn: its chart holds the state's series and its canvas has the stimulus colour
        _wait(lambda: js(COLOURED_PIXELS) > 50, what="the stimulus to be drawn")
        drawn = js("return [window.xdreamWatch.charts.stimulus.u.data[1], window.xdreamWatch.state.stimulus.series[0]]")
        np.testing.assert_allclose(drawn[0], drawn[1])
        assert js("return window.xdreamWatch.charts.real.u.data[1].length") == 64  # the neuron's optimum, beside it
        assert len(driver.find_elements("css selector", "#gallery canvas")) >= 2

        release.set()  # let the run finish; the page then shows the complete store
        worker.join(30)
        _wait(lambda: driver.find_element("id", "status").text == "complete", what="the page to show completion")
        state = js("return window.xdreamWatch.state")  # what the page got from /api/state
        assert_matches_store(state, path)
        assert driver.find_element("id", "generation").text == str(state["generation"]) == "50"
        assert driver.find_element("id", "presentations").text == "1,000"
        assert points() == 50
        assert js("return window.xdreamWatch.errors") == 0
    finally:
        release.set()
        driver.quit()
        if server is not None:
            server.stop()
