"""`xdream-ts show`: the summary of a run store, as text or JSON."""
from __future__ import annotations

import json


def format_summary(s: dict) -> str:
    def f(v):
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    lines = [
        f"run            {s['path']}",
        f"target         {s['scorer']}   decoder {s['decoder']}   optimizer {s['optimizer']}",
        f"presentations  {s['presentations']} of {s['budget']} in {s['generations']} generations"
        f" (repeats {s['repeats']}, missing responses {s['missing_responses']})",
        f"best score     {f(s['best_score'])}   clean {f(s['best_clean_score'])}"
        # a plausible run tells its optimizer a penalised value; its activation is on the 'reported' line
        + ("   (the value told to the optimizer, penalised)" if (s.get("plausibility") or {}).get("reported") else ""),
    ]
    inc = s.get("incumbent")
    # one measurement is just the best response: a "mean over 1 presentations" line would claim a robustness
    # the run never measured
    if inc and inc.get("measurements", 0) > 1:
        lines.append(f"incumbent      mean {f(inc['mean_score'])} over {inc['measurements']} presentations"
                     f"   clean {f(inc.get('clean_score'))}   (the optimizer's pick: not a lucky draw)")
    if s.get("relative_activation") is not None:
        lines.append(f"relative act.  {f(s['relative_activation'])}  (best / reference max {f(s['reference_max'])};"
                     f" > 1 is a super stimulus)")
    lines.append(f"complete       {s['complete']}")
    if s.get("plausibility"):
        from ..analysis import format_plausibility
        lines.append(format_plausibility(s["plausibility"]))
        if s["plausibility"].get("reported"):  # a plausible run: feasibility and the unconstrained best beside
            from ..plausible import format_lines
            lines.extend(format_lines(s["plausibility"]))
    return "\n".join(lines)


def cmd_show(args) -> int:
    from ..loop import load_run
    r = load_run(args.run)
    s = r.summary()
    if args.plausibility or args.reference_data or args.layer or args.model:
        from ..analysis import plausibility_summary
        # a plausible run keeps what it measured (feasibility, the unconstrained best); the refit adds to it
        s["plausibility"] = {**(s.get("plausibility") or {}),
                             **plausibility_summary(r, model=args.model, layer=args.layer,
                                                    reference_series=args.reference_data)}
    elif "plausibility" not in s and not args.no_plausibility:
        # issue 16: a run whose real series are known (its --data, the shipped sample) says how plausible
        # its result is without a flag
        from ..analysis import known_plausibility
        measured = known_plausibility(r)
        if measured:
            s["plausibility"] = measured
    print(json.dumps(s) if args.json else format_summary(s))
    return 0


def add_cli(sub):
    p = sub.add_parser("show", help="summarise a run store")
    p.add_argument("run", help="run store folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plausibility", action="store_true",
                   help="Mahalanobis distance of the best series to real data in activation space (the shipped "
                        "FordA sample for the shipped model; --reference-data otherwise)")
    p.add_argument("--reference-data", help="UCR dataset folder or .tsv of real series (implies --plausibility)")
    p.add_argument("--layer", help="tensor to measure plausibility in (default: the penultimate layer)")
    p.add_argument("--model", help="the .onnx model (default: the one the run probed)")
    p.add_argument("--no-plausibility", action="store_true",
                   help="skip the distance a run with known real series (--data, the shipped model) gets by default")
    p.set_defaults(func=cmd_show)
