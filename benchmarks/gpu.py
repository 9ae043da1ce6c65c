"""Real-scale timings for a lent GPU (issue 28, item 8), and the same script on a CPU with ``--tiny``.

On an SD-1.4-shaped pipeline (random weights of the true shapes, ``unsee.testing.sd14_shaped_pipeline``), per
half-precision dtype (fp16, bf16; fp32 trainable masters): seconds per update of ESD-x and EAP (batch 4, 10-step
partial DDIM), timed as the difference between 7 and 2 updates so that set-up cancels; one sensitivity spectrum
(4 draws) over ``--words`` concepts, projected to SD's 49,408-token vocabulary; evaluation throughput (images per
second, 20 DDIM steps with CFG, batches of 8); and peak memory. ``--tiny`` runs the same on a tiny mini-shaped
pipeline on the CPU (fp32 and bf16): it checks the script, and measures nothing about a GPU.
Writes OUT.{json,md} (default benchmarks/results/gpu). Usage: python benchmarks/gpu.py [--tiny] [--out OUT]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

from _report import write_report
from unsee.concepts.vocab import Vocabulary
from unsee.impact.spectrum import make_draws, spectrum
from unsee.methods import erase, make_config
from unsee.metrics.judged import prompt_images
from unsee.models import fingerprint

RESULTS = Path(__file__).parent / "results"
SD_VOCAB = 49408


def pipeline(tiny: bool, device: str):
    if tiny:
        from unsee.world.mini import MiniConfig, build_components, make_pipeline

        cfg = MiniConfig(unet_channels=(32, 32, 32), vae_channels=(32, 32), text_width=32, text_layers=1, text_heads=2,
                         heads=4, batch_size=4, freeze_text_encoder=False, text_pretrain_steps=0)  # fmt: skip
        return make_pipeline(build_components(cfg)).to(device)
    from unsee.testing import sd14_shaped_pipeline

    return sd14_shaped_pipeline().to(device)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak resident set (Linux: KiB)


def per_update(pipe, method: str, device: str, ddim_steps: int) -> float:
    """Seconds per update: (time of 7 updates - time of 2) / 5."""
    own = {"n_centres": 20} if method == "eap" else {}
    secs = []
    for iters in (2, 7):
        cfg = make_config(method, iterations=iters, batch_size=4, ddim_steps=ddim_steps, template="a {}", **own)
        sync(device)
        t0 = time.perf_counter()
        erase(pipe, ["circle"], cfg, torch.Generator().manual_seed(0))
        sync(device)
        secs.append(time.perf_counter() - t0)
    return (secs[1] - secs[0]) / 5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="a tiny pipeline on the CPU: checks the script")
    ap.add_argument("--words", type=int, default=2048, help="concepts in the timed spectrum (projected to 49,408)")
    ap.add_argument("--images", type=int, default=32, help="images in the throughput run")
    ap.add_argument("--out", default=str(RESULTS / "gpu"))
    args = ap.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        raise SystemExit("no GPU here; run with --tiny to check the script on the CPU")
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", str(torch.get_num_threads()))))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16} if args.tiny else {"fp16": torch.float16, "bf16": torch.bfloat16}
    base = pipeline(args.tiny, device)
    res: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
                 "tiny": args.tiny, "model_fingerprint": fingerprint(base), "dtypes": {}}  # fmt: skip
    steps = 2 if args.tiny else 10
    for name, dtype in dtypes.items():
        pipe = base.to(dtype=dtype)
        row: dict = {}
        reset_peak(device)
        for method in ("esd", "eap"):
            row[f"{method}_s_per_update"] = per_update(pipe, method, device, steps)
        row["erase_peak_mib"] = peak_mib(device)
        # one spectrum: --words concepts (random text-encoder outputs of the true shape) x 4 draws
        n = min(args.words, 64) if args.tiny else args.words
        emb = torch.randn(n, 77, pipe.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(0))
        vocab = Vocabulary(tuple(f"w{i}" for i in range(n)), emb.to(device, dtype))
        draws = make_draws(pipe, 4, seed=0, steps=steps)
        edit = erase(pipe, ["circle"], make_config("esd", iterations=1, batch_size=1, ddim_steps=steps),
                     torch.Generator().manual_seed(0))  # fmt: skip
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        spectrum(pipe, edit, vocab, draws, force=True)
        sync(device)
        sec = time.perf_counter() - t0
        row |= {"spectrum_words": n, "spectrum_s": sec, "spectrum_s_projected_49k": sec * SD_VOCAB / n,
                "spectrum_peak_mib": peak_mib(device)}  # fmt: skip
        # evaluation throughput: images per second at 20 DDIM steps with CFG
        k = 4 if args.tiny else args.images
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        prompt_images(pipe, [f"a red circle {i}" for i in range(k)], n=1, steps=20, guidance_scale=7.5, batch_size=8)
        sync(device)
        row |= {"images_per_s": k / (time.perf_counter() - t0), "sampling_peak_mib": peak_mib(device)}
        res["dtypes"][name] = row
        print(name, row, flush=True)
    md = [f"# {'Tiny CPU check' if args.tiny else 'Real-scale timings'} ({res['device']}, torch {res['torch']})", "",
          ("A tiny mini-shaped pipeline on the CPU: checks that the script runs; it measures nothing about a GPU."
           if args.tiny else "SD-1.4-shaped pipeline (random weights of the true shapes), fp32 trainable masters."),
          "", "| dtype | ESD-x s / update | EAP s / update | erase peak MiB | spectrum s (words) | spectrum s, 49,408 "
          "words (projected) | images / s (20 steps, CFG) | sampling peak MiB |",
          "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in res["dtypes"].items():
        md.append(f"| {name} | {r['esd_s_per_update']:.3f} | {r['eap_s_per_update']:.3f} | {r['erase_peak_mib']:.0f} | "
                  f"{r['spectrum_s']:.1f} ({r['spectrum_words']}) | {r['spectrum_s_projected_49k']:.0f} | "
                  f"{r['images_per_s']:.2f} | {r['sampling_peak_mib']:.0f} |")  # fmt: skip
    write_report(Path(args.out), res, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
