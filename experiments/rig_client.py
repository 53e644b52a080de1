"""Reference lab-rig client for `xdream-ts rig`: a simulated Poisson neuron behind a flaky rig.

It does what a rig program does: ask for a block of stimuli, "present" each one (here: a simulated
linear-nonlinear neuron with Poisson spike counts, after a random delay), and post the responses back
by id, in partial batches. It misbehaves the way real rigs do, on purpose: some responses are never
sent (dropped trials), some are sent twice, some are held back and sent after the next block (late),
and when the service is down (restarting) it keeps retrying until it is back.

    python experiments/rig_client.py --url http://127.0.0.1:8750 --length 200 [--token-env RIG_TOKEN]

As a function (tests drive the service with it): ``drive(url, length=..., ...) -> dict`` of counts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def drive(url: str, length: int, *, channels: int | None = None, neuron_seed: int = 0, scale: float = 2.0,
          seed: int = 0, block_size: int = 16, delay: tuple[float, float] = (0.0, 0.01), drop: float = 0.05,
          duplicate: float = 0.05, late: float = 0.05, late_after_s: float = 1.0, token: str | None = None,
          down_for_s: float = 60.0,
          max_seconds: float = 600.0, on_block=None) -> dict:
    """Run the rig until the service says done; returns what was sent and the service's final status.

    drop / duplicate / late: probabilities per presentation of never answering, answering twice, and
    answering only ``late_after_s`` seconds later (after the service's timeout_s, such a response
    arrives when its generation is closed: the service counts it as late). ``down_for_s``: how long the service may be unreachable
    before giving up. ``on_block(block)`` is called with every block received (tests use it); when it
    returns False the block is lost, as when the rig program crashes while holding it.
    """
    import httpx

    from xdream_ts.adapters.simulated import SimulatedNeuron

    neuron = SimulatedNeuron(length=length, channels=channels, seed=neuron_seed)
    rng = np.random.default_rng(seed)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counts = {"blocks": 0, "presented": 0, "posted": 0, "dropped": 0, "duplicated": 0, "held_late": 0,
              "reconnects": 0, "empty_blocks": 0, "lost_blocks": 0}
    held: list[tuple[float, dict]] = []  # (time held, response): late responses
    t_end = time.monotonic() + max_seconds

    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10.0) as client:
        def call(method: str, path: str, body=None) -> dict:
            """One request; while the service is down (a restart), retry with backoff for down_for_s."""
            down_since = None
            wait = 0.05
            while True:
                try:
                    r = client.request(method, path, json=body)
                    if r.status_code < 500:
                        if r.status_code >= 400:
                            raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {r.text}")
                        return r.json()
                except httpx.TransportError:
                    pass
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    counts["reconnects"] += 1
                if now - down_since > down_for_s:
                    raise RuntimeError(f"the rig service at {url} has been unreachable for {down_for_s:.0f} s")
                time.sleep(wait)
                wait = min(1.0, wait * 2)

        def post(items: list[dict]) -> None:
            # partial posts: the rig sends what it has, in random-sized batches
            i = 0
            while i < len(items):
                k = int(rng.integers(1, max(2, len(items) - i + 1)))
                call("POST", "/responses", {"responses": items[i:i + k]})
                counts["posted"] += k
                i += k

        while time.monotonic() < t_end:
            block = call("POST", "/blocks", {"max": block_size})
            due = [item for t, item in held if time.monotonic() - t >= late_after_s or block["done"]]
            if due:  # responses held back long enough go now
                held = [(t, item) for t, item in held if not any(item is d for d in due)]
                post(due)
            if block["done"]:
                break
            if on_block is not None and on_block(block) is False:
                counts["lost_blocks"] += 1  # the rig lost this block (it crashed): nothing is answered
                continue
            if not block["stimuli"]:
                counts["empty_blocks"] += 1
                time.sleep(block["wait_s"])
                continue
            counts["blocks"] += 1
            answers = []
            for stim in block["stimuli"]:
                series = np.asarray(stim["series"], dtype=np.float32)[None]
                rate = max(0.0, float(neuron(series)[0])) * scale
                value = float(rng.poisson(rate) / scale)
                time.sleep(float(rng.uniform(*delay)))
                counts["presented"] += 1
                u = rng.random()
                if u < drop:
                    counts["dropped"] += 1
                    continue
                item = {"id": stim["id"], "value": value}
                if u < drop + late:
                    counts["held_late"] += 1
                    held.append((time.monotonic(), item))
                    continue
                answers.append(item)
                if u < drop + late + duplicate:
                    counts["duplicated"] += 1
                    answers.append(dict(item))
            post(answers)
        else:
            raise RuntimeError(f"the run did not finish within {max_seconds:.0f} s")
        counts["service"] = call("GET", "/status")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8750")
    ap.add_argument("--length", type=int, required=True, help="series length (as in the rig config)")
    ap.add_argument("--channels", type=int)
    ap.add_argument("--token-env", help="environment variable holding the service's token")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--drop", type=float, default=0.05)
    ap.add_argument("--duplicate", type=float, default=0.05)
    ap.add_argument("--late", type=float, default=0.05)
    ap.add_argument("--late-after", type=float, default=1.0, help="seconds a late response is held back")
    ap.add_argument("--delay", type=float, nargs=2, default=(0.0, 0.01), metavar=("MIN", "MAX"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        sys.exit(f"rig_client: environment variable {args.token_env} is not set")
    counts = drive(args.url, args.length, channels=args.channels, block_size=args.block_size, drop=args.drop,
                   duplicate=args.duplicate, late=args.late, late_after_s=args.late_after, delay=tuple(args.delay), seed=args.seed, token=token)
    print(json.dumps(counts, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
