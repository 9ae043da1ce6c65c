"""The ``unsee`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from unsee import __version__


def _world_train(args: argparse.Namespace) -> None:
    from unsee.world.mini import MiniConfig, train_mini

    cfg = MiniConfig(**{f.name: getattr(args, f.name) for f in fields(MiniConfig) if hasattr(args, f.name)})
    path = train_mini(cfg, args.out, resume=args.resume, device=args.device)
    print(f"trained mini pipeline written to {path}")


def _add_world(sub: argparse._SubParsersAction) -> None:
    from unsee.world.mini import MiniConfig

    world = sub.add_parser("world", help="the drawn world: sample it, train its oracle and mini model")
    wsub = world.add_subparsers(dest="world_cmd", required=True)
    tr = wsub.add_parser("train", help="train the mini text-to-image model from scratch")
    defaults = MiniConfig()
    tr.add_argument("--out", default="runs/mini", help="run folder (checkpoint.pt, pipeline/)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--device", default="cpu")
    for name in ("seed", "steps", "vae_steps", "batch_size", "workers", "threads", "checkpoint_every", "export_every"):
        tr.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    tr.add_argument("--lr", type=float, default=defaults.lr)
    tr.set_defaults(func=_world_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unsee", description=__doc__)
    parser.add_argument("--version", action="version", version=f"unsee {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_world(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        print(f"unsee: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
