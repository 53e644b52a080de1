"""Screenshot of the live view (README "Live view"): a noisy simulated search, watched mid-run in Chromium.

    python experiments/watch_screenshot.py [--out experiments/results/watch.png]

Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium
(the `test` extra). The run: basis decoder, genetic optimizer, a simulated neuron of length 200 with
multiplicative gain noise (so clean beside observed), 10% of responses dropped (missing), 2,000
presentations; the screenshot is taken at about 60% of the budget.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from xdream_ts.adapters.simulated import SimulatedNeuron, with_noise
from xdream_ts.loop import run
from xdream_ts.watch import serve


class DropSome:
    """A noisy target that loses a tenth of its responses (NaN), as a flaky rig does."""

    def __init__(self, scorer, share=0.1, seed=0):
        self.inner, self.share, self.rng = scorer, share, np.random.default_rng(seed)
        self.noisy, self.length = True, scorer.length

    def clean(self, series):
        return self.inner.clean(series)

    def __call__(self, series):
        out = np.asarray(self.inner(series), dtype=float)
        out[self.rng.random(len(out)) < self.share] = np.nan
        return out

    def describe(self):
        return {"name": "simulated_neuron", "kind": "simulated", **self.inner.describe(), "dropped": self.share}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/results/watch.png")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    out = Path(args.out).resolve()
    os.chdir(tempfile.mkdtemp())  # the page shows the path as given: a short relative one
    store = Path("runs/neuron.zarr")
    neuron = SimulatedNeuron(length=200, seed=1)
    scorer = DropSome(with_noise(neuron, "gain:0.5", seed=0))
    budget, stop_at = 2000, 1200
    reached = threading.Event()

    def slow(g, presentations, best):  # a real target takes time; let the browser see it grow
        if presentations >= stop_at:
            reached.set()
        time.sleep(0.05 if presentations < stop_at else 0.5)

    search = dict(decoder="basis", scorer=scorer, optimizer="genetic", budget=budget, repeats=2, store=str(store),
                  progress=False, callback=slow, reference_max=neuron.max_response)
    worker = threading.Thread(target=run, kwargs=search, daemon=True)
    worker.start()
    server = serve(store, port=0, block=False, wait=True, interval_s=0.5)
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1400",
              "--hide-scrollbars"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(server.url)
        reached.wait(120)
        time.sleep(1.5)  # two polls: the page has drawn the generation just committed
        height = driver.execute_script("return document.documentElement.scrollHeight")
        inner = driver.execute_script("return window.innerHeight")
        driver.set_window_size(1300, driver.get_window_size()["height"] + height - inner)  # the whole page
        time.sleep(1.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        print(f"screenshot: {args.out}")
    finally:
        driver.quit()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
