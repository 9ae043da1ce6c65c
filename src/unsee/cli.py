"""The ``unsee`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from unsee import __version__


def _world_train(args: argparse.Namespace) -> None:
    from unsee.world.mini import MiniConfig, train_mini

    cfg = MiniConfig(**{f.name: getattr(args, f.name) for f in fields(MiniConfig) if hasattr(args, f.name)})
    path = train_mini(cfg, args.out, resume=args.resume, device=args.device, init_from=args.init_from,
                      start_step=args.start_step)  # fmt: skip
    print(f"trained mini pipeline written to {path}")


def _world_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from unsee.images import image_grid
    from unsee.world.captions import caption
    from unsee.world.render import render, sample_scene

    rng = np.random.default_rng(args.seed)
    scenes = [sample_scene(rng) for _ in range(args.n)]
    images = np.stack([render(s) for s in scenes])
    labels = []
    for s in scenes:
        things = " + ".join(f"{t.colour} {t.obj}" for t in s.things)
        labels.append(f"{things} | {s.background}{' | frame' if s.frame else ''} | \"{caption(s, rng)}\"")
    image_grid(images, labels, cols=args.cols, title=f"unsee world, seed {args.seed}").save(args.out)
    print(f"wrote {args.out}")


def _world_train_oracle(args: argparse.Namespace) -> None:
    from unsee.world.oracle import OracleConfig, train_oracle

    acc = train_oracle(OracleConfig(seed=args.seed), out=args.out)
    print("held-out top-1: " + ", ".join(f"{h} {v:.1%}" for h, v in acc.items()))


def _add_world(sub: argparse._SubParsersAction) -> None:
    from unsee.world.mini import MiniConfig

    world = sub.add_parser("world", help="the drawn world: sample it, train its oracle and mini model")
    wsub = world.add_subparsers(dest="world_cmd", required=True)
    tr = wsub.add_parser("train", help="train the mini text-to-image model from scratch")
    defaults = MiniConfig()
    tr.add_argument("--out", default="runs/mini", help="run folder (checkpoint.pt, pipeline/)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--init-from", default=None, help="warm-start from an exported pipeline folder")
    tr.add_argument("--start-step", type=int, default=0, help="with --init-from: the step that pipeline reached")
    for name in ("seed", "steps", "vae_steps", "batch_size", "workers", "threads", "checkpoint_every", "export_every"):
        tr.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    tr.add_argument("--lr", type=float, default=defaults.lr)
    tr.set_defaults(func=_world_train)
    sa = wsub.add_parser("sample", help="draw a labelled grid of ground-truth scenes and captions")
    sa.add_argument("--out", default="world.png")
    sa.add_argument("--n", type=int, default=32)
    sa.add_argument("--cols", type=int, default=8)
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=_world_sample)
    orc = wsub.add_parser("train-oracle", help="train the oracle classifier that judges the mini model")
    from unsee.world.oracle import DEFAULT_PATH

    orc.add_argument("--out", default=str(DEFAULT_PATH))
    orc.add_argument("--seed", type=int, default=0)
    orc.set_defaults(func=_world_train_oracle)


def _generate(args: argparse.Namespace) -> None:
    import torch

    from unsee.images import image_grid, save_images
    from unsee.models import load_pipeline, sampling_defaults
    from unsee.sampling import sample

    pipe = load_pipeline(args.model, device=args.device)
    d = sampling_defaults(args.model)
    steps, guidance = args.steps or d.steps, args.guidance if args.guidance is not None else d.guidance_scale
    prompts = [p for p in args.prompt for _ in range(args.n)]
    g = torch.Generator(args.device).manual_seed(args.seed)
    images = sample(pipe, prompts, steps=steps, guidance_scale=guidance, generator=g)
    labels = [f"{p} (#{i % args.n})" for i, p in enumerate(prompts)]
    image_grid(images, labels, cols=min(args.n, 8), title=f"{args.model} | seed {args.seed} | {steps} steps, "
               f"guidance {guidance}").save(args.out)  # fmt: skip
    print(f"wrote {args.out}")
    if args.save_each:
        folder = Path(args.out).with_suffix("")
        save_images(images, folder, [f"{i:03d}" for i in range(len(prompts))])
        print(f"wrote {len(prompts)} images to {folder}/")


def _models(args: argparse.Namespace) -> None:
    from unsee.models import BUNDLED, folder_size

    for name, path in BUNDLED.items():
        size = f"{folder_size(path) / 2**20:.1f} MiB" if path.exists() else "missing"
        print(f"{name:8s} {size:>10s}  {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unsee", description=__doc__)
    parser.add_argument("--version", action="version", version=f"unsee {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="generate a labelled image grid")
    gen.add_argument("--model", default="mini", help="mini, a diffusers folder, or a hub id")
    gen.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    gen.add_argument("--n", type=int, default=8, help="images per prompt")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    gen.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    gen.add_argument("--out", default="grid.png")
    gen.add_argument("--save-each", action="store_true", help="also write each image to OUT-without-suffix/")
    gen.add_argument("--device", default="cpu")
    gen.set_defaults(func=_generate)
    mod = sub.add_parser("models", help="list the bundled models")
    mod.set_defaults(func=_models)
    _add_world(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, FloatingPointError) as e:  # ModelError is a ValueError
        print(f"unsee: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
