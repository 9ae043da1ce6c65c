"""The ``unsee`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from unsee import __version__
from unsee.report import add_arguments as _add_report

if TYPE_CHECKING:
    from unsee.world.mini import MiniConfig


def mini_config(args: argparse.Namespace) -> MiniConfig:
    """The trainer's config from ``unsee world train`` flags; settings without a flag keep their defaults."""
    from unsee.world.mini import MiniConfig

    return MiniConfig(**{f.name: getattr(args, f.name) for f in fields(MiniConfig) if hasattr(args, f.name)})


TRAIN_HELP = {
    "seed": "seed of every draw (images, noise, initialisation)",
    "steps": "UNet steps in all",
    "vae_steps": "autoencoder steps before the UNet stage",
    "batch_size": "images per UNet step",
    "workers": "processes drawing the training images",
    "threads": "torch threads (0: torch's default)",
    "checkpoint_every": "steps between checkpoints (what --resume continues from)",
    "export_every": "steps between pipeline exports",
    "anneal_from": "step where the lr starts to fall linearly",
    "anneal_to": "step where the lr reaches 0",
    "detail_from": "step where the detail stage restarts from the EMA weights (0: no detail stage)",
    "detail_to": "step where the detail stage's lr reaches 0",
    "detail_batch_size": "images per detail-stage step (0: --batch-size)",
    "text_pretrain_steps": "steps of the text encoder's pretext task (which concepts a caption names) before the UNet stage",
    "warmup": "steps of linear lr warm-up",
    "heads": "attention heads per UNet transformer block (diffusers' attention_head_dim)",
}


def _world_train(args: argparse.Namespace) -> None:
    from unsee.world.mini import train_mini

    cfg = mini_config(args)
    path = train_mini(cfg, args.out, resume=args.resume, device=args.device, init_from=args.init_from,
                      start_step=args.start_step)  # fmt: skip
    print(f"trained mini pipeline written to {path}")


def _world_sample(args: argparse.Namespace) -> None:
    import numpy as np

    from unsee.images import image_grid
    from unsee.world.captions import caption
    from unsee.world.render import render, sample_scene

    if args.concept is not None:  # an image set of one concept (a textual inversion's D_c), not a grid
        from unsee.world.concepts import write_concept_images

        if args.out is None:
            raise ValueError("--concept writes a folder of images: pass --out DIR")
        n = 64 if args.n is None else args.n
        out = write_concept_images(args.concept, args.out, n, args.seed, without=args.without)
        what = f"without {args.concept}" if args.without else f"of {args.concept}"
        print(f"wrote {n} images {what} to {out}/ (concept.json, preview/grid.png)")
        return
    if args.without:
        raise ValueError("--without needs --concept: the concept the images leave out")
    args.out = args.out or "world.png"
    rng = np.random.default_rng(args.seed)
    scenes = [sample_scene(rng) for _ in range(32 if args.n is None else args.n)]
    images = np.stack([render(s) for s in scenes])
    labels = []
    for s in scenes:
        things = " + ".join(f"{t.colour} {t.obj}" for t in s.things)
        labels.append(f'{things} | {s.background}{" | frame" if s.frame else ""} | "{caption(s, rng)}"')
    image_grid(images, labels, cols=args.cols, title=f"unsee world, seed {args.seed}").save(args.out)
    print(f"wrote {args.out}")


def _world_train_oracle(args: argparse.Namespace) -> None:
    from unsee.world.oracle import OracleConfig, train_oracle

    acc = train_oracle(OracleConfig(seed=args.seed), out=args.out)
    print("held-out top-1: " + ", ".join(f"{h} {v:.1%}" for h, v in acc.items()))


def _world_train_judge(args: argparse.Namespace) -> None:
    from unsee.world.judge2 import Judge2Config, train_judge2

    acc = train_judge2(Judge2Config(seed=args.seed), out=args.out)
    print("held-out top-1: " + ", ".join(f"{h} {v:.1%}" for h, v in acc.items()))


def _add_world(world: argparse.ArgumentParser) -> None:
    from unsee.world.mini import MiniConfig

    wsub = world.add_subparsers(dest="world_cmd", required=True)
    tr = wsub.add_parser("train", help="train the mini text-to-image model from scratch")
    defaults = MiniConfig()
    tr.add_argument("--out", default="runs/mini", help="run folder (checkpoint.pt, pipeline/)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--init-from", default=None, help="warm-start from an exported pipeline folder")
    tr.add_argument("--start-step", type=int, default=0, help="with --init-from: the step that pipeline reached")
    for name in ("seed", "steps", "vae_steps", "batch_size", "workers", "threads", "checkpoint_every", "export_every",
                 "anneal_from", "anneal_to", "detail_from", "detail_to", "detail_batch_size", "text_pretrain_steps",
                 "warmup", "heads"):  # fmt: skip
        tr.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name), help=TRAIN_HELP.get(name))
    tr.add_argument("--lr", type=float, default=defaults.lr)
    tr.add_argument("--ema-decay", type=float, default=defaults.ema_decay)
    tr.add_argument("--t-sampling", choices=("weighted", "uniform"), default=defaults.t_sampling)
    tr.add_argument("--keep-exports", action="store_true", help="also keep every export as OUT/exports/stepN")
    tr.add_argument("--freeze-token-embeddings", action="store_true", help="keep the token embeddings at initialisation")
    tr.add_argument("--freeze-text-encoder", action=argparse.BooleanOptionalAction, default=defaults.freeze_text_encoder,
                    help="keep the text encoder as the pretext task (or its init) left it")  # fmt: skip
    tr.add_argument("--text-grad-min-snr", type=float, default=defaults.text_grad_min_snr,
                    help="samples with SNR below this pass no gradient into the text encoder (0: all do)")  # fmt: skip
    tr.add_argument("--text-lr-scale", type=float, default=defaults.text_lr_scale,
                    help="the text encoder's lr as a fraction of the UNet's")  # fmt: skip
    tr.add_argument("--text-pretrain-lr", type=float, default=defaults.text_pretrain_lr, help="the pretext task's lr")
    tr.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default=defaults.prediction_type)
    tr.add_argument("--min-snr-gamma", type=float, default=defaults.min_snr_gamma, help="min-SNR loss weights cap the SNR here")
    tr.add_argument(
        "--detail-gamma",
        type=float,
        default=defaults.detail_gamma,
        help="min-SNR cap in the detail stage (--detail-from to --detail-to; --detail-to 0 turns it off)",
    )
    tr.add_argument("--snr-floor", type=float, default=defaults.snr_floor, help="v only: min-SNR weights floor the SNR here")
    tr.add_argument("--zero-terminal-snr", action=argparse.BooleanOptionalAction, default=defaults.zero_terminal_snr,
                    help="pure noise at t = T, DDIM from there (needs --prediction-type v_prediction)")  # fmt: skip
    tr.set_defaults(func=_world_train)
    sa = wsub.add_parser("sample", help="draw a labelled grid of ground-truth scenes and captions, or, with "
                         "--concept, a folder of images of one concept (a textual inversion's training set)")  # fmt: skip
    sa.add_argument("--out", default=None, help="the grid (default world.png), or with --concept the folder to write")
    sa.add_argument("--n", type=int, default=None, help="scenes (default 32), or with --concept images (default 64)")
    sa.add_argument("--concept", default=None,
                    help="write N images that show this world concept: an object, colour, style or frame")  # fmt: skip
    sa.add_argument("--without", action="store_true", help="with --concept: images that do not show it")
    sa.add_argument("--cols", type=int, default=8)
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=_world_sample)
    orc = wsub.add_parser("train-oracle", help="train the oracle classifier that judges the mini model")
    from unsee.world.oracle import DEFAULT_PATH

    orc.add_argument("--out", default=str(DEFAULT_PATH))
    orc.add_argument("--seed", type=int, default=0)
    orc.set_defaults(func=_world_train_oracle)
    from unsee.world.judge2 import DEFAULT_PATH as JUDGE2_PATH
    from unsee.world.judge2 import Judge2Config

    jud = wsub.add_parser("train-judge", help="train the second judge, independent of the oracle (evaluate's agreement check)")
    jud.add_argument("--out", default=str(JUDGE2_PATH))
    jud.add_argument("--seed", type=int, default=Judge2Config.seed)
    jud.set_defaults(func=_world_train_judge)


def _edit_model(args: argparse.Namespace, folders: list[str]) -> None:
    """Set ``args.model`` when --model is not given: the model the (first) edit records it was made on, else mini."""
    if args.model is not None:
        return
    import json

    from unsee.models import BUNDLED

    recorded = None
    for f in folders:
        meta = Path(f).expanduser() / "edit.json"
        if meta.exists() and (recorded := json.loads(meta.read_text()).get("base_model")):
            break
    if recorded and recorded not in BUNDLED and Path(recorded).is_absolute() and not Path(recorded).exists():
        raise ValueError(f"the edit was made on the model in {recorded}, which is not on this machine; pass --model with "
                         "that model's folder or hub id")  # fmt: skip
    args.model = recorded or "mini"


def _generate(args: argparse.Namespace) -> None:
    _edit_model(args, [args.edit] if args.edit else [])
    import torch

    from unsee.images import image_grid, save_images
    from unsee.models import load_pipeline, sampling_defaults
    from unsee.sampling import check_sampling, sample

    if args.n < 1:
        raise ValueError(f"--n must be at least 1 (got {args.n}): it is the number of images per prompt")
    d = sampling_defaults(args.model)
    steps = d.steps if args.steps is None else args.steps
    guidance = d.guidance_scale if args.guidance is None else args.guidance
    check_sampling(steps, guidance)  # before loading anything
    pipe = load_pipeline(args.model, device=args.device)
    if args.edit:
        from unsee.edits import Edit

        Edit.load(args.edit).apply(pipe, force=args.force)
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


def parse_key_values(items: list[str], flag: str = "--set") -> dict:
    """``key=value`` pairs (``flag``'s); values are JSON when they parse (numbers, lists as tuples, booleans),
    else strings; dashes in keys become underscores."""
    import json

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} takes key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return out


def _erase(args: argparse.Namespace) -> None:
    import json

    import torch

    from unsee.concepts.learned import learned_tokens
    from unsee.images import image_grid
    from unsee.methods import Run, erase, make_config
    from unsee.models import load_pipeline, sampling_defaults
    from unsee.sampling import sample

    overrides = parse_key_values(args.set)
    for name in ("iterations", "lr", "params", "template", "adversary", "allow_split"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.method == "age" and args.model == "mini" and "target_words" not in overrides:
        from unsee.world.captions import concept_words

        overrides["target_words"] = tuple(concept_words())  # the world names its concepts, as AGE's vocabularies do
    cfg = make_config(args.method, **overrides)
    concepts, learned = learned_concepts(args.concept, args.learned or [])
    if args.images and not cfg.uses_images:
        raise ValueError(f"--images: the {args.method} method does not learn from images (the robust method does)")
    if args.images and len(args.images) != len(args.concept):
        raise ValueError(f"--images given {len(args.images)} times for {len(args.concept)} --concept; pass one folder per "
                         "concept, in the same order")  # fmt: skip
    if cfg.uses_images and not args.images and args.model != "mini":
        raise ValueError(f"the {args.method} method learns from images of each erased concept; pass --images DIR "
                         "once per --concept (a folder of the concept's images at the model's resolution)")  # fmt: skip
    pipe = load_pipeline(args.model, device=args.device)
    out = Path(args.out)
    images = None
    if cfg.uses_images:  # D_ce: the user's folders, or on the mini model the world's renders of each concept
        folders = args.images or [str(_world_images(c, out / "images" / c, args.n_images, args.seed)) for c in args.concept]
        images = [_model_images(pipe, f) for f in folders]
    g = torch.Generator().manual_seed(args.seed)
    edit = erase(pipe, concepts, cfg, g, run=Run(out, args.checkpoint_every, args.resume, progress=True), learned=learned,
                 force=args.force, images=images)  # fmt: skip
    edit.save(out)
    (out / "command.json").write_text(json.dumps(vars(args) | {"func": None}, indent=2, default=str))
    print(f"edit written to {out} ({edit.num_changed:,} changed weights, {edit.info['seconds']:.0f} s)")
    if args.no_preview:
        return
    d = sampling_defaults(args.model)
    prompts = args.preview_prompt or _preview_prompts(args.model, args.concept)
    n = 4
    batch = [p for p in prompts for _ in range(n)]
    seed = lambda: torch.Generator(args.device).manual_seed(args.seed)  # noqa: E731
    tokens = learned_tokens([c for c in concepts if not isinstance(c, str)] + learned)
    kw = dict(steps=d.steps, guidance_scale=d.guidance_scale, learned=tokens)
    before = sample(pipe, batch, generator=seed(), **kw)
    with edit.applied(pipe):
        after = sample(pipe, batch, generator=seed(), **kw)
    rows = [im for i in range(len(prompts)) for im in (before[i * n : (i + 1) * n], after[i * n : (i + 1) * n])]
    labels = [f"{tag}: {p}" for p in prompts for tag in ("before", "after")]
    grid = image_grid(torch.cat(rows), cols=n, cell=96, row_labels=labels,
                      title=f"{args.method} erasing {', '.join(args.concept)} (same seeds before and after)")  # fmt: skip
    grid.save(out / "before_after.png")
    print(f"before/after grid: {out / 'before_after.png'}")


def learned_concepts(names: list[str], folders: list[str]) -> tuple[list, list]:
    """``--concept`` names and ``--learned`` folders as erase()'s ``concepts`` and ``learned``: a name that is a
    learned concept's token becomes that concept; learned concepts no --concept names go to ``learned``."""
    from unsee.concepts.learned import TOKEN_LIKE, LearnedConcept

    loaded = [LearnedConcept.load(f) for f in folders]
    by_token = {c.token: c for c in loaded}
    concepts = []
    for name in names:
        if name in by_token:
            concepts.append(by_token[name])
        elif TOKEN_LIKE.fullmatch(name.strip()):
            have = f"the --learned concepts are {', '.join(by_token)}" if by_token else "no --learned concept was given"
            raise ValueError(f"--concept {name!r} looks like a learned token, but {have}; pass the folder "
                             f"`unsee invert --token {name!r}` wrote with --learned DIR")  # fmt: skip
        else:
            concepts.append(name)
    return concepts, [c for c in loaded if c.token not in names]


def _preview_prompts(model: str, concepts: list[str]) -> list[str]:
    from unsee.world import OBJECTS

    prompts = [f"a {c}" if c[0] not in "aeiou" else f"an {c}" for c in concepts]
    if model == "mini":
        prompts += [f"a blue {o}" for o in OBJECTS if o not in concepts][:2]
    return prompts


def _add_erase(er: argparse.ArgumentParser) -> None:
    from unsee.methods import methods

    er.add_argument("--model", default="mini")
    er.add_argument("--method", default="eap", choices=methods())
    er.add_argument("--concept", action="append", required=True,
                    help="repeat to erase several at once; a --learned concept's token erases that concept")  # fmt: skip
    er.add_argument("--learned", action="append", default=None, metavar="DIR",
                    help="a learned concept (unsee invert --out DIR), erased when --concept names its token, else "
                    'a token the method\'s prompts may use (e.g. --set c_n="<clean>"); repeatable')  # fmt: skip
    er.add_argument("--force", action="store_true", help="accept learned concepts made on another base model")
    er.add_argument("--out", required=True, help="edit folder (edit.safetensors, edit.json, checkpoint.pt)")
    er.add_argument("--seed", type=int, default=0)
    er.add_argument("--iterations", type=int, default=None)
    er.add_argument("--lr", type=float, default=None)
    er.add_argument("--params", default=None, help="xattn | noxattn | selfattn | full")
    er.add_argument("--template", default=None, help='prompt for a concept, e.g. "a {}"')
    er.add_argument("--adversary", default=None, choices=("search", "predicted"),
                    help="eap: find preserved concepts by the search (eq. 4) or take the impact predictor's")  # fmt: skip
    er.add_argument("--allow-split", action="store_true", default=None,
                    help="erase a concept the tokenizer splits into pieces (the pieces together)")  # fmt: skip
    er.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other method setting")
    er.add_argument("--images", action="append", default=None, metavar="DIR",
                    help="robust: a folder of images of the concept (D_ce), once per --concept in order; on the mini "
                    "model the world's renders are used when left out")  # fmt: skip
    er.add_argument("--n-images", type=int, default=32, help="robust on the mini model: renders per concept")
    er.add_argument("--checkpoint-every", type=int, default=50)
    er.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    er.add_argument("--preview-prompt", action="append", default=None)
    er.add_argument("--no-preview", action="store_true")
    er.add_argument("--device", default="cpu")
    er.set_defaults(func=_erase)


def _model_images(pipe, folder: str, flag: str = "--images", rgb_only: bool = False):
    """An image folder at the model's resolution; load_image_folder's errors name the flag."""
    from unsee.images import load_image_folder

    size = pipe.vae_scale_factor * pipe.unet.config.sample_size
    try:
        return load_image_folder(folder, size, rgb_only=rgb_only)
    except ValueError as e:
        raise ValueError(f"{flag}: {e} (the model draws {size}x{size})") from e


def _invert(args: argparse.Namespace) -> None:
    import torch

    from unsee.concepts.inversion import TEMPLATES, InversionConfig, InversionRun, invert
    from unsee.concepts.learned import check_new_token
    from unsee.models import load_pipeline

    cfg = InversionConfig(token=args.token, n_vectors=args.vectors, init_word=args.init_word, steps=args.steps, lr=args.lr,
                          batch_size=args.batch_size, templates=tuple(args.template or TEMPLATES))  # fmt: skip
    edit = None
    if args.edit:
        from unsee.edits import Edit

        edit = Edit.load(args.edit)
    pipe = load_pipeline(args.model, device=args.device)
    check_new_token(pipe.tokenizer, cfg.token)  # before the images: the cheaper mistake first
    images = _model_images(pipe, args.images)
    out = Path(args.out)
    g = torch.Generator().manual_seed(args.seed)
    run = InversionRun(out, args.checkpoint_every, args.resume, progress=True)
    concept = invert(pipe, images, cfg, g, edit=edit, run=run, force=args.force)
    concept.save(out)
    loss = concept.info["log"][-1]["loss"] if concept.info.get("log") else float("nan")
    through = f" through the edit {args.edit}" if edit is not None else ""
    print(f"learned {concept.token} ({concept.n_vectors} vector{'s' * (concept.n_vectors > 1)}) from {len(images)} images"
          f"{through} in {concept.info['seconds']:.0f} s (final loss {loss:.4f}); written to {out}/ "
          f"(learned_embeds.safetensors, concept.json)")  # fmt: skip
    if (out / "checkpoint.pt").exists():
        print(f"checkpoint: {out / 'checkpoint.pt'} (--resume continues from it)")
    if args.no_preview:
        return
    path = invert_preview(pipe, args.model, concept, images, edit, out / "preview.png", seed=args.seed, device=args.device,
                          force=args.force)  # fmt: skip
    print(f"preview (training images, then images drawn with {concept.token}, same seeds): {path}")


def invert_preview(pipe, model: str, concept, images, edit, path: Path, *, seed: int = 0, n: int = 4,
                   device: str = "cpu", force: bool = False) -> Path:  # fmt: skip
    """A labelled grid: ``n`` training images, then ``n`` images per prompt with the learned token from the base
    model (and the edited one), every row from the same seeds."""
    import torch

    from unsee.images import image_grid
    from unsee.models import sampling_defaults
    from unsee.sampling import sample

    d = sampling_defaults(model)
    prompts = [concept.token, f"a {concept.token}"]
    batch = [p for p in prompts for _ in range(n)]

    def draw() -> torch.Tensor:
        return sample(pipe, batch, steps=d.steps, guidance_scale=d.guidance_scale, learned=concept.tokens,
                      generator=torch.Generator(device).manual_seed(seed))  # fmt: skip

    rows = [images[:n].float()]
    labels = ["training images"]
    models = [("base", draw())]
    if edit is not None:
        with edit.applied(pipe, force=force):
            models.append(("edited", draw()))
    for tag, x in models:
        for i, p in enumerate(prompts):
            rows.append(x[i * n : (i + 1) * n].cpu())
            labels.append(f'{tag}: "{p}"')
    cells = [im for row in rows for im in list(row) + [torch.ones_like(rows[0][0])] * (n - len(row))]
    grid = image_grid(torch.stack(cells), cols=n, cell=96, row_labels=labels,
                      title=f"{concept.token} on {model}: {d.steps} steps, guidance {d.guidance_scale}, seed {seed}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _add_invert(inv: argparse.ArgumentParser) -> None:
    from unsee.concepts.inversion import InversionConfig

    d = InversionConfig()
    inv.add_argument("--model", default="mini")
    inv.add_argument("--edit", default=None, help="learn through this edit (the inversion attack on an erased model)")
    inv.add_argument("--images", required=True, help="folder of images of the concept, at the model's resolution")
    inv.add_argument("--token", required=True, help='the new token, e.g. "<frame>" (one the tokenizer does not know)')
    inv.add_argument("--out", required=True, help="folder (learned_embeds.safetensors, concept.json, checkpoint.pt, preview.png)")
    inv.add_argument("--vectors", type=int, default=d.n_vectors, help="input vectors the token stands for")
    inv.add_argument("--init-word", default=d.init_word, help="start at this word's embedding (default: the vocabulary's mean)")
    inv.add_argument("--steps", type=int, default=d.steps, help="optimisation steps")
    inv.add_argument("--lr", type=float, default=d.lr)
    inv.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    shown = ", ".join(repr(t) for t in d.templates)
    inv.add_argument("--template", action="append", default=None,
                     help=f'prompt the token is trained in, "{{}}" for the token; repeatable (default: {shown})')  # fmt: skip
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--checkpoint-every", type=int, default=100)
    inv.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    inv.add_argument("--force", action="store_true", help="apply an edit made for another base model")
    inv.add_argument("--no-preview", action="store_true")
    inv.add_argument("--device", default="cpu")
    inv.set_defaults(func=_invert)


def _attack(args: argparse.Namespace) -> None:
    _edit_model(args, [args.edit])
    import json

    import torch

    from unsee.attacks import AttackRun, attack, make_config
    from unsee.edits import Edit
    from unsee.models import load_pipeline

    overrides = parse_key_values(args.set)
    if args.n is not None:
        overrides["n"] = args.n
    cfg = make_config(args.method, **overrides)
    judge_name = args.judge or ("oracle" if args.model == "mini" else None)
    if judge_name is None:
        raise ValueError(f"an attack needs a judge that tells whether images show {args.concept!r}, and the command "
                         "line has only the mini world's (--judge oracle or judge2, for models of that world); on "
                         "other models call unsee.attacks.attack() from Python with any unsee.judges.Judge")  # fmt: skip
    from unsee.world.attacks import attack_target, concept_prompts

    concept_prompts(args.concept, args.prompts)  # an unknown concept or --prompts 0: one line, before loading anything
    if cfg.uses_images and args.images is None and args.n_images < 1:
        raise ValueError(f"--n-images must be at least 1 (got {args.n_images}): the world images the attack learns from")
    edit = Edit.load(args.edit)
    pipe = load_pipeline(args.model, device=args.device)
    out = Path(args.out)
    images = None  # only the attacks that learn from pictures get them (the probes and synonym do not)
    if args.images is not None:
        images = _model_images(pipe, args.images)
    elif cfg.uses_images:
        images = _model_images(pipe, str(_world_images(args.concept, out / "images", args.n_images, args.seed)))
    if judge_name == "oracle":
        from unsee.world.oracle import load_oracle

        judge = load_oracle()
    else:
        from unsee.world.judge2 import load_judge2

        judge = load_judge2()
    target = attack_target(args.concept, images, n_prompts=args.prompts, judge=judge)
    g = torch.Generator().manual_seed(args.seed)
    result = attack(pipe, edit, target, cfg, g, run=AttackRun(out, args.checkpoint_every, args.resume, progress=True),
                    force=args.force, keep_images=True)  # fmt: skip
    result.save(out)
    (out / "command.json").write_text(json.dumps(vars(args) | {"func": None}, indent=2, default=str))
    s = result.summary()
    print(f"{args.method} attack on {edit.method} erasing {', '.join(edit.concepts)}: {args.concept!r} read as "
          f"{target.judge_label!r} by the {judge_name}, {len(result.prompts)} prompts x {cfg.n} seeds")  # fmt: skip
    print("| measure | value |\n|---|---|")
    for key, what in (("base_rate", "base model (plain prompts)"), ("asr_unattacked", "erased, unattacked"),
                      ("attacked_rate", "erased, attacked prompts"), ("asr", "ASR (unattacked or attacked)")):  # fmt: skip
        print(f"| {what} | {s[key]:.1%} |")
    print(f"| search / evaluation | {s['seconds']:.0f} s / {s['eval_seconds']:.0f} s |")
    if result.info.get("samplers"):  # a probe: the plain prompts, drawn another way
        hits = result.info["sampler_hits"]
        print(f"probe variants (prompt x seed hits): {', '.join(f'{k} {v}' for k, v in hits.items())}")
    else:
        print(
            f"adversarial prompt: {result.adversarial_prompts[0][0]!r}"
            + (f" (+{len(result.adversarial_prompts[0]) - 1} variants)" if len(result.adversarial_prompts[0]) > 1 else "")
        )
    grid = attack_grid(result, out / "grid.png", n_show=args.grid_prompts)
    print(
        f"wrote {out / 'attack.json'} and {grid} (base, erased and attacked rows, same seeds)"
        + (f"; the learned token in {out / 'learned'}/" if result.learned is not None else "")
    )


def _world_images(concept: str, folder: Path, n: int, seed: int) -> Path:
    """D_c of a world concept rendered into ``folder`` (reused when a previous run wrote the same set there)."""
    import json

    from unsee.world.concepts import world_concept, write_concept_images

    meta = folder / "concept.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        if (m.get("concept"), m.get("n"), m.get("seed"), m.get("without")) == (world_concept(concept).word, n, seed, False):
            return folder
    return write_concept_images(concept, folder, n, seed)


def attack_grid(result, path: Path, n_show: int = 3, cols: int = 8) -> Path:
    """Per prompt (the first ``n_show``): the base model, the erased model unattacked and attacked, same seeds."""
    import torch

    from unsee.images import image_grid

    n = len(result.hits_base[0])
    k = min(n, cols)
    cells, labels = [], []
    for i, prompt in enumerate(result.prompts[:n_show]):
        adv = result.adversarial_prompts[i][0]
        for tag, key, hits, text in (("base", "base", result.hits_base, prompt),
                                     ("erased", "unattacked", result.hits_unattacked, prompt),
                                     ("attacked", "attacked", result.hits_attacked, adv)):  # fmt: skip
            x = result.images[key][i * n : i * n + k]
            cells.append(x.cpu())
            labels.append(f'{tag}: "{text}" ({sum(hits[i])}/{n})')
    erased = ", ".join(result.edit["concepts"])
    grid = image_grid(torch.cat(cells), cols=k, cell=96, row_labels=labels,
                      title=f"{result.attack} vs {result.edit['method']} ({erased}): ASR {result.asr:.0%}")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _add_attack(at: argparse.ArgumentParser) -> None:
    from unsee.attacks import attacks

    at.add_argument("--model", default=None, help="mini, a folder or a hub id (default: the edit's own model, else mini)")
    at.add_argument("--edit", required=True, help="the erasure to attack (unsee erase --out)")
    at.add_argument("--method", default="inversion", choices=attacks())
    at.add_argument("--concept", required=True, help="the erased concept, as the world names it (circle, disk, red, ...)")
    at.add_argument("--out", required=True, help="folder (attack.json, grid.png, images/, learned/, checkpoint.pt)")
    at.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any attack setting")
    at.add_argument("--n", type=int, default=None, help="seeds per evaluation prompt")
    at.add_argument("--prompts", type=int, default=4, help="evaluation prompts (the world's colours etc.)")
    at.add_argument("--images", default=None,
                    help="images of the concept for the attacks that learn from them (default: N-IMAGES rendered "
                    "world images in OUT/images)")  # fmt: skip
    at.add_argument("--n-images", type=int, default=32, help="world images rendered when --images is not given")
    at.add_argument("--judge", choices=("oracle", "judge2"), default=None,
                    help="the world's judge that reads the concept (default: the oracle on --model mini)")  # fmt: skip
    at.add_argument("--grid-prompts", type=int, default=3, help="prompts shown in grid.png")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--checkpoint-every", type=int, default=50)
    at.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    at.add_argument("--force", action="store_true", help="attack an edit made for another base model")
    at.add_argument("--device", default="cpu")
    at.set_defaults(func=_attack)


@contextmanager
def shared_tensor_warnings() -> Iterator[None]:
    """Within this block, the warning that composed edits share tensors is printed as one ``unsee: warning:`` line."""
    import warnings

    from unsee.edits import SharedTensorsWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SharedTensorsWarning)
        yield
    for w in caught:
        if issubclass(w.category, SharedTensorsWarning):
            print(f"unsee: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def compose_edits(folders: list[str], pipe, force: bool = False):
    """The edit folders as one edit: the edit itself, or their composition on ``pipe`` (deltas summed)."""
    from unsee.edits import Edit

    edits = [Edit.load(f) for f in folders]
    if len(edits) == 1:
        return edits[0]
    with shared_tensor_warnings():
        return Edit.compose(edits, pipe, force=force)


def _apply(args: argparse.Namespace) -> None:
    _edit_model(args, args.edit)
    from unsee.models import load_pipeline

    pipe = load_pipeline(args.model)
    edit = compose_edits(args.edit, pipe, force=args.force)
    out = edit.merge(pipe, args.out, force=args.force)
    if args.save_edit:
        edit.save(args.save_edit)
        print(f"edit written to {args.save_edit}")
    what = f"the composition of {len(args.edit)} edits" if len(args.edit) > 1 else "the edit"
    print(f"merged diffusers pipeline ({what}) written to {out}")


def _add_apply(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("edit", nargs="+", help="edit folders; several are composed: each one's change to the base model is "
                    "added, and a tensor two edits change gets the sum of both changes (a warning names them)")  # fmt: skip
    ap.add_argument("--model", default=None, help="mini, a folder or a hub id (default: the edit's own model, else mini)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-edit", default=None, metavar="DIR", help="also save the (composed) edit as an edit folder")
    ap.add_argument("--force", action="store_true", help="apply edits made for another base model")
    ap.set_defaults(func=_apply)


def _export(args: argparse.Namespace) -> None:
    _edit_model(args, [args.edit])
    from unsee.edits import Edit
    from unsee.export.lora import WEIGHTS_NAME, export_lora
    from unsee.models import load_pipeline

    edit = Edit.load(args.edit)
    pipe = load_pipeline(args.model)
    lora = export_lora(edit, pipe, rank=args.rank, allow_dropped=args.allow_dropped, force=args.force)
    out = lora.save(args.out, info={"edit": args.edit, "model": args.model, "method": edit.method,
                                    "concepts": list(edit.concepts)})  # fmt: skip
    report = lora.report()
    dropped = f"; left out {len(lora.dropped)} changed tensors a LoRA cannot carry" if lora.dropped else ""
    print(f"LoRA of rank {lora.rank} on {report['layers']} layers written to {out / WEIGHTS_NAME} (relative error max "
          f"{report['max_error']:.3g}, mean {report['mean_error']:.3g}{dropped}; see lora_report.json)")  # fmt: skip


def _add_export(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("edit", help="edit folder")
    ex.add_argument("--format", choices=["lora"], required=True, help="lora: each changed weight's delta by truncated SVD")
    ex.add_argument("--rank", type=int, required=True, help="the LoRA's rank (every layer's; its alpha is the same)")
    ex.add_argument("--out", required=True, help="folder for pytorch_lora_weights.safetensors and lora_report.json")
    ex.add_argument("--model", default=None, help="the model the edit was made on, whose weights the deltas are taken "
                    "from (default: the one the edit records, else mini)")  # fmt: skip
    ex.add_argument("--allow-dropped", action="store_true", help="export even if the edit changes tensors a LoRA cannot "
                    "carry (biases, norms, embeddings): they are left out and listed in the report")  # fmt: skip
    ex.add_argument("--force", action="store_true", help="export an edit made for another base model")
    ex.set_defaults(func=_export)


def _compose_report(args: argparse.Namespace) -> None:
    import json

    from unsee.models import load_pipeline

    if args.model != "mini":
        raise ValueError("compose-report judges with the mini world's oracle, so it runs on --model mini; on other "
                         "models call unsee.impact.interference.interference_report() from Python with any "
                         "unsee.judges.Judge and your prompts")  # fmt: skip
    if len(args.edit) < 2:
        raise ValueError(f"compose-report compares edits with their composition: pass two edit folders or more "
                         f"(got {len(args.edit)})")  # fmt: skip
    from unsee.concepts.prompts import DEFAULT_NEUTRAL
    from unsee.edits import Edit
    from unsee.impact.interference import interference_report, plot_spectra
    from unsee.impact.spectrum import concept_vocabulary, make_draws
    from unsee.world.captions import JUDGE_LABELS
    from unsee.world.oracle import load_oracle
    from unsee.world.prompts import composition_prompts

    edits = [Edit.load(f) for f in args.edit]
    erased = list(dict.fromkeys(JUDGE_LABELS.get(c, c) for e in edits for c in e.concepts))
    prompts = composition_prompts(erased, n_prompts=args.prompts, n_preserved=args.preserved)
    pipe = load_pipeline(args.model)
    vocab = draws = None
    if args.draws > 0:
        vocab = concept_vocabulary(pipe, neutral=DEFAULT_NEUTRAL, cache_dir=args.cache)
        draws = make_draws(pipe, args.draws, seed=args.seed)
    with shared_tensor_warnings():
        report = interference_report(pipe, edits, load_oracle(), prompts, labels=JUDGE_LABELS, vocab=vocab, draws=draws,
                                     n=args.n, seed=args.seed, cache_dir=args.cache, keep_images=True, force=args.force,
                                     progress=True, workers=args.workers, batch_size=args.batch_size,
                                     base_esr=args.base_esr)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = [report.grid(out / "grid.png").name]
    if report.spectrum is not None:
        images.append(plot_spectra(report, out / "spectrum.png").name)
    meta = {"model": args.model, "model_fingerprint": edits[0].base_fingerprint, "edits": args.edit}
    (out / "compose.json").write_text(json.dumps(report.to_dict() | meta, indent=2))
    md = report.markdown(images)
    (out / "compose.md").write_text(md)
    print(md)
    print(f"wrote {out / 'compose.json'}, {out / 'compose.md'} and {', '.join(str(out / i) for i in images)}")


def _add_compose_report(cr: argparse.ArgumentParser) -> None:
    cr.add_argument("edit", nargs="+", help="edit folders (two or more), made on one base model")
    cr.add_argument("--model", default="mini")
    cr.add_argument("--out", required=True, help="folder (compose.json, compose.md, grid.png, spectrum.png)")
    cr.add_argument("--n", type=int, default=2, help="images per prompt")
    cr.add_argument("--prompts", type=int, default=4, help="prompts per erased concept")
    cr.add_argument("--preserved", type=int, default=8, help="prompts that ask for no erased concept (PSR)")
    cr.add_argument("--draws", type=int, default=4, help="fixed (z_t, t) draws of the spectra (0: no spectra)")
    cr.add_argument("--seed", type=int, default=0)
    cr.add_argument("--cache", default=str(Path.home() / ".cache" / "unsee"), help="where base outputs are cached")
    cr.add_argument("--force", action="store_true", help="compose edits made for another base model")
    cr.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="models measured at once, each "
                    "on its own copy of the model, the CPU threads shared between them (default 2 where there are 2 "
                    "cores: the 10-edit report took 107-111 s the first time and 96-101 s with the base model cached, "
                    "against 115-122 s and 107-119 s with 1, in three runs; an earlier run had 1 ahead, "
                    "benchmarks/results/compose.md)")  # fmt: skip
    cr.add_argument("--base-esr", action="store_true", help="also each erased concept's ESR-1 under the base model "
                    "(how often it fails to draw the concept at all): the base model's images of every erased "
                    "prompt, about a sixth of the 10-edit report's work the first time (later reports take them from "
                    "--cache)")  # fmt: skip
    cr.add_argument("--batch-size", type=int, default=12, help="images per UNet call (default 12: on a CPU the mini "
                    "model runs fastest per image at about this size, benchmarks/results/unet_batch.md)")  # fmt: skip
    cr.set_defaults(func=_compose_report)


def _alpha(args: argparse.Namespace) -> None:
    import json

    from unsee.impact.alpha import AlphaConfig
    from unsee.models import fingerprint, load_pipeline

    if args.model != "mini":
        raise ValueError("alpha judges which concept appears with the mini world's oracle, so it runs on --model mini; "
                         "on other models call unsee.impact.alpha.dominance() from Python with any unsee.judges.Judge "
                         "and your templates")  # fmt: skip
    from unsee.world.alpha import by_group, world_dominance
    from unsee.world.oracle import load_oracle

    cfg = AlphaConfig(n=args.n, seed=args.seed, present=args.present)  # bad settings: one line, before loading
    judge = load_oracle()
    by_group(judge, args.concepts)
    pipe = load_pipeline(args.model, device=args.device)
    res = world_dominance(pipe, judge, args.concepts, cfg, predict=not args.no_predictors, cache_dir=args.cache,
                          progress=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "model_fingerprint": fingerprint(pipe), "groups": {}}
    for group, (d, preds, rho) in res.items():
        d.heatmap(out / f"alpha_{group}.png", title=f"dominance of {group}s: D[a, b] = P(a only) - P(b only)")
        d.grid(out / f"alpha_{group}_grid.png")
        report["groups"][group] = d.to_dict() | {"predictors": preds, "spearman": rho}
        top = sorted(d.alpha.items(), key=lambda x: -x[1])
        print(f"{group}s, alpha (mean dominance): " + ", ".join(f"{c} {a:+.2f}" for c, a in top))
        if rho:
            print("  Spearman with alpha: " + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items()))
    (out / "alpha.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'alpha.json'} and, per group, alpha_<group>.png (heat map) and alpha_<group>_grid.png")


def _add_alpha(al: argparse.ArgumentParser) -> None:
    al.add_argument("--model", default="mini")
    al.add_argument("--concepts", nargs="+", required=True, help="objects and/or colours (each group is measured apart)")
    al.add_argument("--out", required=True, help="folder (alpha.json, alpha_<group>.png, alpha_<group>_grid.png)")
    al.add_argument("--n", type=int, default=2, help="images per prompt (4 templates x both orders per pair)")
    al.add_argument("--present", type=float, default=0.3, help="the judge's probability at which a concept counts as drawn")
    al.add_argument("--seed", type=int, default=0)
    al.add_argument("--no-predictors", action="store_true", help="skip the base-model predictors of alpha")
    al.add_argument("--cache", default=str(Path.home() / ".cache" / "unsee"),
                    help="where every prompt's images are kept (a stopped run resumes)")  # fmt: skip
    al.add_argument("--device", default="cpu")
    al.set_defaults(func=_alpha)


def _budget(text: str) -> float:
    """A budget given as a number or a fraction, "8/255"."""
    try:
        num, _, den = text.partition("/")
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from None


def _protect(args: argparse.Namespace) -> None:
    import json

    import torch

    from unsee.images import image_grid, save_images
    from unsee.models import load_pipeline
    from unsee.protect import ProtectConfig, protect

    target = args.target
    if args.mode == "targeted" and target is not None and args.model == "mini":
        from unsee.concepts.prompts import with_article
        from unsee.world.concepts import world_concept

        target = with_article(world_concept(target).word)  # an unknown concept: one line naming the known ones
    cfg = ProtectConfig(mode=args.mode, target=target, eps=args.eps, step_size=args.step_size, steps=args.steps,
                        batch_size=args.batch_size, surrogate_steps=args.surrogate_steps)  # fmt: skip
    pipe = load_pipeline(args.model, device=args.device)
    images = _model_images(pipe, args.images, rgb_only=True)
    result = protect(pipe, images, cfg, torch.Generator().manual_seed(args.seed), progress=True)
    out = Path(args.out)
    from unsee.images import IMAGE_SUFFIXES

    names = sorted(p.stem for p in Path(args.images).expanduser().iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    save_images(result.images, out / "images", names)
    k = min(8, len(images))
    diff = ((result.images[:k] - images[:k]) / (2 * max(args.eps, 1e-8)) + 0.5).clamp(0, 1)  # the perturbation, amplified
    grid = image_grid(torch.cat([images[:k], result.images[:k], diff]), cols=k, cell=96,
                      row_labels=["original", "protected", "delta (amplified)"])  # fmt: skip
    grid.save(out / "grid.png")
    (out / "protect.json").write_text(json.dumps(result.to_dict() | {"model": args.model, "images": args.images}, indent=2))
    print(f"{len(images)} images protected ({args.mode}{f', towards {target!r}' if args.mode == 'targeted' else ''}, "
          f"l_inf {result.linf * 255:.1f}/255) in {result.seconds:.0f} s: {out / 'images'}, {out / 'grid.png'}")  # fmt: skip


def _add_protect(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("--model", default="mini")
    pr.add_argument("--images", required=True, help="folder of RGB images at the model's size")
    pr.add_argument("--out", required=True, help="folder (images/ with the same names, grid.png, protect.json)")
    pr.add_argument("--mode", choices=("targeted", "untargeted", "noise"), default="targeted")
    pr.add_argument("--target", default=None, help="the concept to learn instead (targeted; on the mini, a world concept, "
                    "best an alpha one: see `unsee alpha`)")  # fmt: skip
    pr.add_argument("--eps", type=_budget, default=8 / 255, help="l_inf budget in [0, 1] pixel units (default 8/255)")
    pr.add_argument("--step-size", type=_budget, default=1 / 255, help="PGD step (default 1/255)")
    pr.add_argument("--steps", type=int, default=100)
    pr.add_argument("--batch-size", type=int, default=8)
    pr.add_argument("--surrogate-steps", type=int, default=0, help="textual-inversion steps of a surrogate token on the "
                    "images per PGD step, whose loss each step also ascends (ASPL against inversion; 0: off)")  # fmt: skip
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(func=_protect)


# evaluate --prompts: the flags that fill metric settings (a metric takes those its config has).
METRIC_FLAGS = ("nudenet_model", "clip_model", "fid_inception", "fid_reference", "lpips_weights", "classifier_model",
                "classifier_labels")  # fmt: skip


def _evaluate_prompts(args: argparse.Namespace) -> None:
    """`unsee evaluate --prompts FILE.csv --metric ...`: real-model metrics on a prompt set (JSON, per-prompt CSV, grids)."""
    import dataclasses
    import json

    import torch

    from unsee.distributed import is_main_process
    from unsee.edits import Edit
    from unsee.images import image_grid
    from unsee.metrics.base import load_metric, metric_config, metrics
    from unsee.metrics.judged import weights_key
    from unsee.metrics.prompt_sets import read_prompt_csv, sample_rows, score_rows, settings, write_per_prompt
    from unsee.models import fingerprint, load_pipeline, sampling_defaults

    names = list(dict.fromkeys(m.strip() for m in (args.metric or "").split(",") if m.strip()))
    if not names:
        raise ValueError(f"--prompts is scored by real-model metrics: pass --metric, e.g. nudenet,clip "
                         f"(available: {', '.join(metrics())})")  # fmt: skip
    configs = {}
    for name in names:
        fields = {f.name for f in dataclasses.fields(metric_config(name))}
        given = {k: getattr(args, k) for k in METRIC_FLAGS if k in fields and getattr(args, k) is not None}
        configs[name] = metric_config(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    rows = read_prompt_csv(args.prompts, prompt_column=args.prompt_column, seed_column=args.seed_column,
                           guidance_column=args.guidance_column, steps_column=args.steps_column, seed=args.seed,
                           limit=args.limit)  # fmt: skip
    loaded = {name: load_metric(c) for name, c in configs.items()}  # a missing weights file stops before any sampling
    pipe = load_pipeline(args.model)
    n = 1 if args.n is None else args.n
    out = Path(args.out)
    run = out.with_suffix("")
    base = None
    if any(m.needs_base for m in loaded.values()):
        base = sample_rows(pipe, rows, run / "cache", n=n, batch_size=args.batch_size, progress=True)
    if args.edit:
        Edit.load(args.edit).apply(pipe, force=args.force)
    key = weights_key(pipe)
    images = sample_rows(pipe, rows, run / "cache", n=n, batch_size=args.batch_size, progress=True, model_key=key)
    summary, per_prompt = score_rows(rows, images, loaded, base)
    for r, d in zip(rows, per_prompt):
        d["steps"], d["guidance_scale"] = settings(pipe, r)
    dflt = sampling_defaults(pipe)
    report = {"model": args.model, "edit": args.edit, "prompts": str(args.prompts), "rows": len(rows), "summary": summary,
              "metrics": {name: c.to_dict() for name, c in configs.items()},
              "sampling": {"n": n, "seed": args.seed, "default_steps": dflt.steps, "default_guidance_scale": dflt.guidance_scale,
                           "size": pipe.unet.config.sample_size * pipe.vae_scale_factor, "batch_size": args.batch_size},
              "columns": {"prompt": args.prompt_column, "seed": args.seed_column, "guidance": args.guidance_column,
                          "steps": args.steps_column},
              "fingerprint": fingerprint(pipe), "weights_key": key,
              "per_prompt_csv": str(out.with_suffix(".csv")), "grids": []}  # fmt: skip
    if not is_main_process():  # under accelerate every process holds the whole report; one writes it
        return
    (run / "grids").mkdir(parents=True, exist_ok=True)
    shown = [k for k in per_prompt[0] if k not in ("index", "case_number", "prompt", "seed", "steps", "guidance_scale")]
    shown = [k for k in shown if isinstance(per_prompt[0][k], float)][:2]
    per_grid = 32
    for g in range(0, len(rows), per_grid):
        chunk = range(g, min(g + per_grid, len(rows)))
        labels = [f"{per_prompt[i]['case_number']}: {rows[i].prompt[:60]}"
                  + "".join(f" | {k} {per_prompt[i][k]:.2f}" for k in shown) for i in chunk]  # fmt: skip
        path = run / "grids" / f"grid_{g // per_grid:03d}.png"
        image_grid(torch.stack([images[i][0] for i in chunk]), labels, cols=8, cell=128).save(path)
        report["grids"].append(str(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    write_per_prompt(out.with_suffix(".csv"), per_prompt)
    lines = [f"# {args.prompts}: {args.edit or args.model} ({len(rows)} prompts x {n})", "", "| metric | value |", "|---|---|",
             *[f"| {k} | {v:.2f} |" for k, v in summary.items()], "",
             f"per prompt: {out.with_suffix('.csv')}; grids: {run / 'grids'}"]  # fmt: skip
    print("\n".join(lines))


def _evaluate(args: argparse.Namespace) -> None:
    _edit_model(args, [args.edit] if args.edit else [])
    if args.prompts is not None:
        return _evaluate_prompts(args)
    import json

    from unsee.edits import Edit
    from unsee.metrics.judged import AGREEMENT_FLOOR, FLAG, mark
    from unsee.models import load_pipeline, sampling_defaults
    from unsee.world import BACKGROUNDS, OBJECTS
    from unsee.world.judge2 import load_judge2
    from unsee.world.oracle import load_oracle
    from unsee.world.protocols import Sampling, class_rates, flagged_classes, judge_objects, object_scores, style_report

    pipe = load_pipeline(args.model)
    oracle = load_oracle()
    check = None if args.no_check else load_judge2()
    d = sampling_defaults(args.model)
    s = Sampling(n=4 if args.n is None else args.n, seed=args.seed, steps=d.steps, guidance_scale=d.guidance_scale)
    concepts: list[str] = list(args.concept or [])
    attacks = [a.strip() for a in (args.attacks or "").split(",") if a.strip()]
    if attacks:
        from unsee.attacks import attacks as known_attacks

        unknown = [a for a in attacks if a not in known_attacks()]
        if unknown:
            raise ValueError(f"--attacks: unknown attack {unknown[0]!r}; available: {', '.join(known_attacks())}")
        if not args.edit:
            raise ValueError("--attacks attacks an erasure: pass --edit DIR (unsee erase --out)")
    undo = None
    if args.edit:
        edit = Edit.load(args.edit)
        undo = edit.apply(pipe, force=args.force)
        concepts = concepts or list(edit.concepts)
    report: dict = {"model": args.model, "edit": args.edit, "protocol": args.protocol, "sampling": vars(s)}
    if args.protocol == "objects":
        erased = [c for c in concepts if c in OBJECTS]
        if not erased:
            raise ValueError(f"the objects protocol needs erased objects; pass --concept from: {', '.join(OBJECTS)}")
        rates = class_rates(judge_objects(pipe, oracle, OBJECTS, s, progress=True, check=check))
        report |= {"erased": erased, "scores": object_scores(rates, erased), "per_class": rates}
        if check is not None:
            report["flagged"] = flagged_classes(rates)
    else:
        style = next((c for c in concepts if c in BACKGROUNDS), None)
        if style is None:
            raise ValueError(f"the style protocol needs an erased style; pass --concept from: {', '.join(BACKGROUNDS)}")
        report |= {"style": style, **style_report(pipe, oracle, style, s, check=check)}
    if attacks:
        from unsee.world.attacks import attack_concepts

        undo.restore()  # attacks apply the edit themselves
        erased = report.get("erased") or [report["style"]]
        budgets: dict[str, dict] = {}
        for item in args.attack_set:
            name, dot, rest = item.partition(".")
            if not dot or name not in attacks:
                raise ValueError(f"--attack-set takes ATTACK.KEY=VALUE for one of --attacks ({', '.join(attacks)}), got {item!r}")
            budgets.setdefault(name, {}).update(parse_key_values([rest], "--attack-set"))
        results = attack_concepts(pipe, edit, erased, attacks, judge=oracle, n=args.attack_n, seed=args.seed,
                                  budgets=budgets, run_dir=Path(args.out).with_suffix("") / "attacks", progress=True)  # fmt: skip
        report["attacks"] = {c: {a: r.summary() for a, r in rs.items()} for c, rs in results.items()}
        for a in attacks:
            got = [rs[a].asr for rs in results.values() if a in rs]
            if got:
                report["scores"][f"ASR {a}"] = sum(got) / len(got)
    flags = report.get("flagged", [])
    rows = [f"| {k} | {100 * v:.1f}% |" for k, v in report["scores"].items()]
    # numbers only: a class's "drawn" (what its prompts draw) stays in the JSON
    cols = list(dict.fromkeys(k for r in report["per_class"].values() for k, v in r.items() if isinstance(v, int | float)))
    per_class = [f"| {mark(c, flags)} | " + " | ".join(f"{100 * r[k]:.1f}%" if k in r else "" for k in cols) + " |"
                 for c, r in report["per_class"].items()]  # fmt: skip
    md_lines = [f"# {args.protocol}: {args.edit or args.model}", "", "The oracle's reads.", "",
                "| measure | value |", "|---|---|", *rows, "", "| class | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 1) + "|", *per_class, ""]  # fmt: skip
    if attacks:
        md_lines += ["Attacks on each erased concept (ASR: the plain or the attacked prompt shows it, the oracle's top-1; "
                     f"{args.attack_n} seeds x 4 prompts).", "",
                     "| concept | base | unattacked | " + " | ".join(f"{a} ASR" for a in attacks) + " |",
                     "|---" * (3 + len(attacks)) + "|"]  # fmt: skip
        for c, rs in report["attacks"].items():
            first = next(iter(rs.values()))
            cells = [f"{100 * rs[a]['asr']:.0f}%" if a in rs else "–" for a in attacks]
            md_lines.append(f"| {mark(c, flags)} | {100 * first['base_rate']:.0f}% | {100 * first['asr_unattacked']:.0f}% | "
                            + " | ".join(cells) + " |")  # fmt: skip
        md_lines.append("")
    if check is not None:
        md_lines.append(f"agreement: how often the second judge's top-1 is the oracle's on the class's generated images; "
                        f"{FLAG} = below {AGREEMENT_FLOOR:.0%}, where neither judge's read is to be trusted"
                        + (f" (flagged: {', '.join(flags)}; the scores above include them)." if flags else "."))  # fmt: skip
        md_lines.append("")
    from unsee.distributed import is_main_process

    if not is_main_process():  # under accelerate every process holds the whole report; one writes it
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    md = "\n".join(md_lines)
    out.with_suffix(".md").write_text(md)
    print(md)


def _add_evaluate(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--model", default=None, help="mini, a folder or a hub id (default: the edit's own model, else mini)")
    ev.add_argument("--edit", default=None)
    ev.add_argument("--protocol", choices=["objects", "style"], default="objects")
    ev.add_argument("--concept", action="append", default=None, help="erased concepts (default: the edit's)")
    ev.add_argument("--n", type=int, default=None, help="images per prompt (default: 4 for the protocols, 1 with --prompts)")
    ev.add_argument("--seed", type=int, default=0, help="the seed of prompt 0 (row i: seed + i, where a CSV row has none)")
    ev.add_argument("--out", default="out/evaluation.json")
    ev.add_argument("--force", action="store_true")
    ps = ev.add_argument_group("prompt sets (--prompts FILE.csv: real-model metrics instead of the world protocols)")
    ps.add_argument("--prompts", default=None, metavar="FILE.csv",
                    help="an I2P- or COCO-layout CSV; writes OUT.json, a per-prompt OUT.csv and OUT/grids; images are "
                    "cached in OUT/cache per model weights, prompt, seed and settings, so a rerun resumes and added rows "
                    "draw only themselves")  # fmt: skip
    ps.add_argument("--metric", default=None, metavar="M,N", help="nudenet, clip, fid, lpips, classifier (comma-separated)")
    ps.add_argument("--prompt-column", default=None, help="default: prompt, caption or text")
    ps.add_argument("--seed-column", default=None, help="default: evaluation_seed, sd_seed or seed; 'none' ignores it")
    ps.add_argument("--guidance-column", default=None,
                    help="default: evaluation_guidance, sd_guidance_scale, guidance_scale or guidance; 'none': the "
                    "model's")  # fmt: skip
    ps.add_argument("--steps-column", default=None, help="default: evaluation_steps, num_inference_steps, ddim_steps or steps")
    ps.add_argument("--limit", type=int, default=None, help="only the first N rows")
    ps.add_argument("--batch-size", type=int, default=8, help="images per sampling batch")
    ps.add_argument("--nudenet-model", default=None, help="NudeNet ONNX file (default: the 320n.onnx in the nudenet wheel)")
    ps.add_argument("--clip-model", default=None, help="a local CLIP folder (CLIPModel + CLIPProcessor)")
    ps.add_argument("--fid-inception", default=None, help="TorchScript Inception file (clean-fid's inception-2015-12-05.pt)")
    ps.add_argument("--fid-reference", default=None, help="folder of reference images for FID")
    ps.add_argument(
        "--lpips-weights",
        default=None,
        help="the LPIPS backbone's torchvision checkpoint (alexnet-owt-7be5be79.pth), or a torch hub folder with it",
    )
    ps.add_argument("--classifier-model", default=None, help="a local AutoModelForImageClassification folder")
    ps.add_argument("--classifier-label", dest="classifier_labels", action="append", default=None,
                    help="a label whose top-1/top-k rates to report (repeat)")  # fmt: skip
    ev.add_argument("--attacks", default=None, metavar="A,B",
                    help="also attack each erased concept (e.g. inversion,token-search) and add ASR columns; results "
                    "are kept next to --out and reused, so an interrupted run resumes")  # fmt: skip
    ev.add_argument("--attack-n", type=int, default=8, help="seeds per attack prompt")
    ev.add_argument("--attack-set", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                    help="change an attack's budget, e.g. inversion.inversion_steps=1200 (default: the budgets the "
                    "attacks benchmark fixed)")  # fmt: skip
    ev.add_argument("--no-check", action="store_true",
                    help="skip the second judge (no per-class agreement with the oracle, nothing flagged)")  # fmt: skip
    ev.set_defaults(func=_evaluate)


def _spectrum(args: argparse.Namespace) -> None:
    _edit_model(args, [args.edit] if args.edit else [])
    import json

    from unsee.concepts.prompts import DEFAULT_NEUTRAL
    from unsee.edits import Edit
    from unsee.impact.spectrum import concept_vocabulary, make_draws, plot_spectrum, spectrum
    from unsee.models import load_pipeline

    pipe = load_pipeline(args.model)
    edit = Edit.load(args.edit) if args.edit else None
    neutral = () if args.no_neutral else DEFAULT_NEUTRAL
    vocab = concept_vocabulary(pipe, args.words or None, template=args.template, neutral=neutral, cache_dir=args.cache)
    draws = make_draws(pipe, args.draws, seed=args.seed)
    spec = spectrum(pipe, edit, vocab, draws, cache_dir=args.cache, force=args.force)
    from unsee.distributed import is_main_process

    main = is_main_process()  # under accelerate every process computes its share and holds the whole; one writes
    out = Path(args.out)
    order = spec.order()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spectrum.json").write_text(json.dumps(spec.to_dict(), indent=2))
        plot_spectrum(spec, out / "spectrum.png")
        print("most affected: " + ", ".join(f"{w} ({s:.4f})" for w, s in order[:8]))
        print("least affected: " + ", ".join(f"{w} ({s:.4f})" for w, s in order[-5:]))
        print(f"wrote {out / 'spectrum.json'} and {out / 'spectrum.png'}")
    if args.extremes > 0 and edit is not None:
        from unsee.impact.empirical import empirical_impact, extremes_grid

        judge, labels = None, None
        if args.model == "mini":
            from unsee.world.captions import JUDGE_LABELS
            from unsee.world.oracle import load_oracle

            judge, labels = load_oracle(), JUDGE_LABELS
        k = min(args.extremes, len(order) // 2)
        pick = [w for w, _ in order[:k]] + [w for w, _ in order[-k:]]
        emp = empirical_impact(pipe, edit, pick, judge=judge, labels=labels, n=args.n, seed=args.seed,
                               template=args.template, keep_images=True, force=args.force)  # fmt: skip
        if main:
            (out / "empirical.json").write_text(json.dumps(emp.to_dict(), indent=2))
            extremes_grid(spec, emp, out / "extremes.png")
            print(f"wrote {out / 'extremes.png'} (the {k} most and least affected concepts, base vs edited, same seeds)")


def _add_spectrum(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", default=None, help="mini, a folder or a hub id (default: the edit's own model, else mini)")
    sp.add_argument("--edit", default=None, help="edit folder (default: the identity edit)")
    sp.add_argument("--words", nargs="*", default=None, help="vocabulary (default: the tokenizer's words)")
    sp.add_argument("--template", default="a {}", help='how a word becomes a prompt ("a {}" picks a/an)')
    sp.add_argument("--no-neutral", action="store_true", help="leave the neutral prompts out of the vocabulary")
    sp.add_argument("--draws", type=int, default=8, help="fixed (z_t, t) draws")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--extremes", type=int, default=3,
                    help="sample the K most and K least affected concepts from both models (0: skip)")  # fmt: skip
    sp.add_argument("--n", type=int, default=4, help="images per concept for --extremes")
    sp.add_argument("--cache", default=str(Path.home() / ".cache" / "unsee"), help="where base outputs are cached")
    sp.add_argument("--out", default="out/spectrum")
    sp.add_argument("--force", action="store_true")
    sp.set_defaults(func=_spectrum)


def _models(args: argparse.Namespace) -> None:
    from unsee.models import BUNDLED, folder_size

    for name, path in BUNDLED.items():
        size = f"{folder_size(path) / 2**20:.1f} MiB" if path.exists() else "missing"
        print(f"{name:8s} {size:>10s}  {path}")


def _add_generate(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--model", default=None, help="mini, a folder or a hub id (default: the edit's own model, else mini)")
    gen.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    gen.add_argument("--n", type=int, default=8, help="images per prompt")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    gen.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    gen.add_argument("--out", default="grid.png")
    gen.add_argument("--save-each", action="store_true", help="also write each image to OUT-without-suffix/")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--edit", default=None, help="apply this edit folder first")
    gen.add_argument("--force", action="store_true", help="apply an edit made for another base model")
    gen.set_defaults(func=_generate)


def _add_models(mod: argparse.ArgumentParser) -> None:
    mod.set_defaults(func=_models)


# The commands in the order `unsee --help` lists them: name -> (help, the function that adds its arguments). A
# command's arguments import what they name (the method and attack registries, their configs: torch and diffusers,
# seconds), so a parser is built with the arguments of the command run only, and `unsee --help` with none.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "generate": ("generate a labelled image grid", _add_generate),
    "invert": ("learn a new token from images of a concept (textual inversion); writes a learned concept folder that "
               "unsee erase --learned and diffusers' load_textual_inversion read", _add_invert),
    "erase": ("erase concepts; writes an edit folder and a before/after grid", _add_erase),
    "attack": ("attack an erased model to bring its concept back; writes attack.json (ASR) and a grid of base, erased "
               "and attacked images", _add_attack),
    "apply": ("merge an edit, or several composed (their changes summed), into a model and write a diffusers folder",
              _add_apply),
    "export": ("export an edit as a LoRA that diffusers' pipe.load_lora_weights(DIR) loads (a full merged model: unsee "
               "apply)", _add_export),
    "compose-report": ("how separately made edits interfere when composed: each concept's ESR alone and composed, PSR "
                       "composed vs each alone, the spectra (JSON + a page of grids)", _add_compose_report),
    "alpha": ("which concepts take over composed prompts: the dominance matrix, alpha scores and what predicts them "
              "(JSON + heat maps + grids)", _add_alpha),
    "protect": ("perturb images (l_inf-bounded) so that a personalisation trained on them learns a chosen concept "
                "instead of what they show (anti-personalisation)", _add_protect),
    "evaluate": ("oracle-judged erasure metrics on the mini world, with a 2nd judge (JSON + Markdown)", _add_evaluate),
    "spectrum": ("the sensitivity spectrum of an edit over a vocabulary (JSON + plots)", _add_spectrum),
    "report": ("one self-contained HTML page on an erasure (grids, ESR/PSR/ASR tables, spectrum, settings and a "
               "verdict): what to open before shipping it", _add_report),
    "models": ("list the bundled models", _add_models),
    "world": ("the drawn world: sample it, train its oracle and mini model", _add_world),
}  # fmt: skip


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``unsee`` parser. ``command``: build only that command's arguments ("" none: the other commands keep
    their names and help, enough for ``unsee --help``); None builds every command's."""
    parser = argparse.ArgumentParser(prog="unsee", description=__doc__)
    parser.add_argument("--version", action="version", version=f"unsee {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, (help_, add) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if command is None or command == name:
            add(p)
    return parser


def command_in(argv: Sequence[str]) -> str:
    """The command ``argv`` runs ("" where it names none: ``unsee --help``, ``--version``, nothing or a typo). The
    top-level parser has no options that take a value, so the command is the first word that is not an option."""
    first = next((a for a in argv if not a.startswith("-")), "")
    return first if first in COMMANDS else ""


# Library errors name Python parameters in backticks (`lr`, `force=True`); the CLI names its flags.
# Parameters whose flag is not the generic `snake_case` -> --snake-case:
PARAM_FLAGS = {
    "concepts": "--concept",
    "prompts": "--prompt",
    "guidance_scale": "--guidance",
    "run.dir": "--out",
    "out": "--out",
    "n_vectors": "--vectors",
    "templates": "--template",
    "n_prompts": "--prompts",
    "classifier_labels": "--classifier-label",
}
QUOTES = "'\""
SET_VALUES = {"True": "true", "False": "false", None: "VALUE"}  # --set reads JSON
_PARAM = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?)(?:=([^`\s]+))?`")


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` came from (``unsee world sample`` -> its own parser)."""
    for dest in ("cmd", "world_cmd"):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or getattr(args, dest, None) is None:
            break
        parser = subs[0].choices[getattr(args, dest)]
    return parser


def cli_message(message: str, flags: set[str] | None = None) -> str:
    """A library error message with its Python parameters named as the command's flags.

    `` `lr` `` -> ``--lr``, `` `allow_split=True` `` -> ``--allow-split``, `` `adversary=search` `` ->
    ``--adversary search``, `` `concepts` `` -> ``--concept`` (:data:`PARAM_FLAGS`). With ``flags``
    (the command's option strings), a parameter without a flag becomes ``--set name=value`` where the
    command has ``--set``, and otherwise stays as the library named it.
    """

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        opt = PARAM_FLAGS.get(name, "--" + name.replace("_", "-"))
        if value == "False":
            opt, value = f"--no-{opt[2:]}", None  # a BooleanOptionalAction's negative, where there is one
        if flags is None or opt in flags:
            return opt if value in (None, "True") else f"{opt} {value.strip(QUOTES)}"
        if "--set" in flags and "." not in name:
            return f"--set {name}={SET_VALUES.get(m.group(2), m.group(2))}"
        return m.group(0)

    return _PARAM.sub(flag, message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_in(argv)
    if not command:  # help, the version, or a usage error: argparse answers from the commands' names alone
        build_parser("").parse_args(argv)
    from unsee.machine import keep_freed_memory  # imports torch: not for the help
    from unsee.quiet import quiet_libraries

    keep_freed_memory()  # the command owns its process: no fresh pages for every large activation

    # The command's own output, not its libraries' warnings and loading bars; entered before
    # build_parser, whose imports already import diffusers' pipelines (transformers warns then).
    with quiet_libraries():
        parser = build_parser(command)
        args = parser.parse_args(argv)
        try:
            args.func(args)
        except (FileNotFoundError, ValueError, FloatingPointError) as e:  # ModelError is a ValueError
            flags = set(_command_parser(parser, args)._option_string_actions)
            print(f"unsee: error: {cli_message(str(e), flags)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"unsee: {interrupted_message(parser, args)}", file=sys.stderr)
            return 130
    return 0


# Commands that keep what they finished (per prompt, per concept or per attack) and pick it up when run again.
CACHED_COMMANDS = {"evaluate": "each finished attack, and with --prompts each finished batch of images",
                   "alpha": "every prompt's images",
                   "compose-report": "the base model's images and spectrum", "spectrum": "the base model's outputs"}  # fmt: skip


def interrupted_message(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """One line on Ctrl-C: where the command stopped and how to go on from there."""
    sub = _command_parser(parser, args)
    name = " ".join(n for n in (getattr(args, "cmd", None), getattr(args, "world_cmd", None)) if n)
    if "--resume" in sub._option_string_actions:
        out = getattr(args, "out", None)
        where = f"{out}/checkpoint.pt" if out else "the output folder's checkpoint.pt"
        every = getattr(args, "checkpoint_every", None)
        each = f" (written every {every} steps)" if every else ""
        return (f"stopped by Ctrl-C during `unsee {name}`; the last checkpoint is {where}{each}: run the same "
                "command with --resume to go on from it")  # fmt: skip
    if name in CACHED_COMMANDS:
        return (f"stopped by Ctrl-C during `unsee {name}`; kept on disk: {CACHED_COMMANDS[name]}; run the same "
                "command again to go on from there")  # fmt: skip
    return f"stopped by Ctrl-C during `unsee {name}`; it keeps nothing part-done: run the same command again"


if __name__ == "__main__":
    sys.exit(main())
