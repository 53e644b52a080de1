"""`xdream-ts optimizers`: the optimizers there are, nevergrad's included."""
from __future__ import annotations


def cmd_optimizers(args) -> int:
    from ..optimizers import BUILTIN
    for name, (_, _, doc) in BUILTIN.items():
        print(f"{name:10s} {doc}")
    try:
        from ..optimizers.nevergrad import list_nevergrad
    except ImportError:
        return 0
    ok, refused = list_nevergrad()
    print(f"\nng:NAME    any of {len(ok)} nevergrad optimizers that take a population, e.g. "
          + ", ".join(f"ng:{n}" for n in ok[:8]) + ", ...")
    if args.all:
        print("\n".join(f"  ng:{n}" for n in ok))
        if refused:
            print("\nleft out (they refuse several workers):")
            print("\n".join(f"  ng:{n}: {why}" for n, why in refused))
    return 0


def add_cli(sub):
    p = sub.add_parser("optimizers", help="list the optimizers")
    p.add_argument("--all", action="store_true", help="list every usable nevergrad optimizer, and those left out")
    p.set_defaults(func=cmd_optimizers)
