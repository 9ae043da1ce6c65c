"""SD-1.4, SD-2.1 and SDXL base 1.0 at their true configurations (random weights, issue 28's item 4): each is saved
as a diffusers folder, loads through ``load_pipeline``, samples like diffusers' own pipeline, takes 2 iterations of
ESD-x and exports a LoRA that plain ``load_lora_weights`` accepts. Marked slow: run with ``pytest -m slow``.

Images are 64 px for speed: the configurations, not the resolution, are what must be true (``sample_size`` stays
the config's). SDXL in fp32 needs about 14 GB; its ESD step runs with the pipeline in bf16 (the trained tensors
stay fp32, as always), since fp32 weights plus Adam's state for its 0.55B cross-attention weights need about 23 GB.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

import unsee.methods
from unsee.export.lora import export_lora
from unsee.methods.base import select_params
from unsee.models import fingerprint, load_pipeline
from unsee.sampling import sample
from unsee.testing import sd14_shaped_pipeline, sd21_pipeline, sdxl_pipeline

SIZE = 64
PROMPT = "a red circle"
CASES = {
    # builder, pipeline class, its (UNet) parameters at least, prediction type, dtype of the ESD step
    "sd14": (sd14_shaped_pipeline, StableDiffusionPipeline, 850_000_000, "epsilon", torch.float32),
    "sd21": (sd21_pipeline, StableDiffusionPipeline, 850_000_000, "v_prediction", torch.float32),
    "sdxl": (sdxl_pipeline, StableDiffusionXLPipeline, 2_500_000_000, "epsilon", torch.bfloat16),
}


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_true_configuration_loads_samples_erases_and_exports(name, tmp_path):
    build, cls, params, prediction, erase_dtype = CASES[name]
    folder = tmp_path / name
    try:
        _check(build, cls, params, prediction, erase_dtype, folder, tmp_path / "lora")
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # SDXL's folder is 14 GB; pytest keeps its last temp folders


def _check(build: Callable, cls: type, params: int, prediction: str, erase_dtype: torch.dtype, folder, lora_dir) -> None:
    src = build(seed=0)
    assert sum(p.numel() for p in src.unet.parameters()) > params
    fp = fingerprint(src)
    src.save_pretrained(folder)
    del src
    gc.collect()

    pipe = load_pipeline(folder)
    assert type(pipe) is cls and pipe.unet.dtype == torch.float32 and fingerprint(pipe) == fp
    assert pipe.scheduler.config.prediction_type == prediction

    # one sampler, with parity to the pipeline's own loop under a DDIM scheduler of the same config
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ours = sample(pipe, [PROMPT], steps=2, guidance_scale=7.5, generator=g(0), height=SIZE, width=SIZE)
    ref = pipe([PROMPT], num_inference_steps=2, guidance_scale=7.5, generator=g(0), height=SIZE, width=SIZE,
               output_type="pt").images  # fmt: skip
    assert ours.shape == ref.shape == (1, 3, SIZE, SIZE) and torch.isfinite(ours).all()
    assert (ours - ref).abs().max().item() <= 1e-4
    del ours, ref

    # 2 iterations of ESD-x
    pipe.to(dtype=erase_dtype)
    cfg = unsee.methods.make_config("esd", params="xattn", iterations=2, batch_size=1, ddim_steps=2, resolution=SIZE)
    edit = unsee.methods.erase(pipe, "circle", cfg, g(0))
    trained = select_params(pipe.unet, "xattn")
    assert sorted(edit.tensors) == sorted(f"unet.{n}" for n in trained)
    own = dict(pipe.unet.named_parameters())
    moved = [k for k, v in edit.tensors.items() if not torch.equal(v, own[k.removeprefix("unet.")].float())]
    assert len(moved) == len(trained)
    assert edit.architecture["pipeline"] == cls.__name__

    # a LoRA of it that plain diffusers loads (the output projections' biases cannot be carried: left out, listed)
    lora = export_lora(edit, pipe, rank=4, allow_dropped=True)
    assert lora.dropped and all(k.endswith(".bias") for k in lora.dropped)
    assert len(lora.errors) == len(trained) - len(lora.dropped)
    lora.save(lora_dir)
    del edit
    gc.collect()
    pipe.load_lora_weights(lora_dir)
    assert pipe.get_active_adapters() == ["default_0"]
    key = next(iter(lora.errors)).removeprefix("unet.").removesuffix(".weight")
    layer = pipe.unet.get_submodule(key)
    loaded = layer.lora_A["default_0"].weight  # in the pipeline's dtype
    torch.testing.assert_close(loaded, lora.state_dict[f"unet.{key}.lora_A.weight"].to(loaded.dtype), rtol=0, atol=0)
