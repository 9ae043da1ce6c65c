"""An edit as a LoRA that plain diffusers loads: ``pipe.load_lora_weights(folder)``.

Each changed weight W' of a linear or convolution layer is written as the base weight W plus a rank-``r``
product: the delta ΔW = W' − W is factored by truncated SVD, ΔW ≈ B A with B = U_r √S_r and A = √S_r V_rᵀ
(the singular values split evenly between the two factors). By Eckart–Young this is the best rank-``r``
approximation in the Frobenius norm, and its relative error is √(Σ_{i>r} s_i²) / ‖ΔW‖_F. A convolution's
kernel is factored as an (out, in·kh·kw) matrix: A is a convolution to ``r`` channels with the layer's own
kernel, B a 1×1 convolution, as peft's LoRA convolutions are.

The layout is peft's, as diffusers' ``save_lora_weights`` writes it: ``unet.<module>.lora_A.weight`` and
``lora_B.weight`` (``text_encoder.<module>...`` for the text encoder) in ``pytorch_lora_weights.safetensors``,
every layer at the same rank with ``lora_alpha`` = rank, so the LoRA's scale is 1 and ``W + B A`` is what loads.

A LoRA adds to weights only: a changed bias, norm or embedding cannot be carried. The export names such tensors
and refuses to drop them unless told to (``allow_dropped``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from unsee.edits import Edit
from unsee.models import Pipeline

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"  # what load_lora_weights(folder) reads
REPORT_NAME = "lora_report.json"
# diffusers' text-encoder LoRA loader handles only CLIP's attention and MLP projections.
TEXT_ENCODER_LAYERS = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")
LORA_COMPONENTS = ("unet", "text_encoder", "text_encoder_2")  # text_encoder_2: SDXL's, which its loader also reads


@dataclass(frozen=True)
class LoraExport:
    """A LoRA made from an edit, and how far it is from the edit."""

    state_dict: dict[str, torch.Tensor] = field(repr=False)
    """``"unet.<module>.lora_A.weight"`` / ``"...lora_B.weight"`` -> fp32 factor (peft's layout)."""
    rank: int
    errors: dict[str, float]
    """Edit tensor (``"unet.<param>"``) -> ‖ΔW − B A‖_F / ‖ΔW‖_F of the stored (fp32) factors."""
    dropped: tuple[str, ...]
    """Changed tensors the LoRA does not carry (biases, norms, embeddings); empty unless ``allow_dropped``."""
    unchanged: tuple[str, ...]
    """Edit tensors equal to the base model's: nothing to carry."""
    base_fingerprint: str
    edit_digest: str

    @property
    def modules(self) -> dict[str, list[str]]:
        """Component -> the modules the LoRA targets."""
        out: dict[str, list[str]] = {}
        for key in self.state_dict:
            if key.endswith(".lora_A.weight"):
                comp, _, name = key.removesuffix(".lora_A.weight").partition(".")
                out.setdefault(comp, []).append(name)
        return out

    def report(self) -> dict[str, Any]:
        errors = list(self.errors.values())
        return {
            "format": "lora",
            "rank": self.rank,
            "lora_alpha": self.rank,
            "weights": WEIGHTS_NAME,
            "base_fingerprint": self.base_fingerprint,
            "edit_digest": self.edit_digest,
            "layers": len(errors),
            "max_error": max(errors, default=0.0),
            "mean_error": sum(errors) / len(errors) if errors else 0.0,
            "errors": self.errors,
            "dropped": list(self.dropped),
            "unchanged": list(self.unchanged),
        }

    def save(self, folder: str | Path, *, info: dict[str, Any] | None = None) -> Path:
        """Write ``pytorch_lora_weights.safetensors`` (with diffusers' adapter metadata) and ``lora_report.json``
        (:meth:`report`, plus ``info``: where the edit and the model came from)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # What diffusers' save_lora_weights stores beside the tensors: one LoraConfig per component, which its
        # loader then uses as it is (without it, the loader infers the same config from the shapes).
        meta = {f"{comp}.{k}": v for comp, names in self.modules.items()
                for k, v in {"r": self.rank, "lora_alpha": self.rank, "target_modules": sorted(names)}.items()}  # fmt: skip
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()}
        save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})
        (folder / REPORT_NAME).write_text(json.dumps((info or {}) | self.report(), indent=2))
        return folder


def carriable(component: str, name: str, module: nn.Module, param: str) -> bool:
    """Whether a LoRA can carry a change of ``module``'s ``param``: the weight of a linear or (ungrouped) 2-D
    convolution layer; in the text encoder, of the projections diffusers' loader targets."""
    if param != "weight":
        return False
    if component.startswith("text_encoder"):
        return isinstance(module, nn.Linear) and name.endswith(TEXT_ENCODER_LAYERS)
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def rank_limit(weight: torch.Tensor) -> int:
    """The largest rank a LoRA of ``weight`` can have: min(out, in·kh·kw)."""
    return min(weight.shape[0], weight[0].numel())


def factor(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW ≈ B A at ``rank`` (truncated SVD in float64, √S on each side): (A, B) shaped as peft's LoRA layers."""
    out = delta.shape[0]
    u, s, vh = torch.linalg.svd(delta.reshape(out, -1).double(), full_matrices=False)
    root = s[:rank].sqrt()
    a = (root[:, None] * vh[:rank]).reshape(rank, *delta.shape[1:])
    b = (u[:, :rank] * root).reshape(out, rank, *([1] * (delta.dim() - 2)))
    return a.float(), b.float()


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B A in float64, shaped as the layer's weight."""
    return (b.double().flatten(1) @ a.double().flatten(1)).reshape(b.shape[0], *a.shape[1:])


def _names(keys: list[str], at_most: int = 4) -> str:
    more = f" and {len(keys) - at_most} more" if len(keys) > at_most else ""
    return ", ".join(keys[:at_most]) + more


def export_lora(edit: Edit, base: Pipeline, *, rank: int, allow_dropped: bool = False,
                force: bool = False) -> LoraExport:  # fmt: skip
    """The LoRA of rank ``rank`` closest to ``edit`` (made on ``base``, the model it is to be loaded into).

    The edit holds its changed tensors' new values, so ``base`` supplies the weights the deltas are taken from;
    it must be the model the edit was made for (checked by fingerprint unless ``force``). Every layer gets rank
    ``rank``, which must not exceed any changed layer's min(out, in·kh·kw). Changed tensors a LoRA cannot carry
    (biases, norms, embeddings) make the export fail unless ``allow_dropped``, which leaves them out and lists them
    in :attr:`LoraExport.dropped`.
    """
    if rank < 1:
        raise ValueError(f"`rank` must be at least 1, got {rank}")
    edit.check(base, force)
    # The deltas are taken layer by layer in float64 where they are factored: an SDXL ESD-x edit changes ~0.5B weights.
    deltas: dict[str, tuple[str, str, torch.Tensor]] = {}  # key -> (component, module, base weight)
    dropped, unchanged = [], []
    for key in sorted(edit.tensors):
        comp, _, pname = key.partition(".")
        model = getattr(base, comp, None) if comp in LORA_COMPONENTS else None
        if model is None:
            raise ValueError(f"edit tensor {key!r} belongs to no component of `base` a LoRA loads "
                             f"({', '.join(LORA_COMPONENTS)})")  # fmt: skip
        params = dict(model.named_parameters())
        if pname not in params:
            raise ValueError(f"edit changes {key}, which `base` does not have; it is for another architecture")
        p = params[pname]
        value = edit.tensors[key]
        if value.shape != p.shape:
            raise ValueError(f"edit tensor {key} has shape {tuple(value.shape)}, `base` {tuple(p.shape)}")
        if torch.equal(value.detach().to("cpu", torch.float64), p.detach().to("cpu", torch.float64)):
            unchanged.append(key)
            continue
        module_name, _, param = pname.rpartition(".")
        if not carriable(comp, module_name, model.get_submodule(module_name), param):
            dropped.append(key)
            continue
        deltas[key] = (comp, module_name, p)
    if dropped and not allow_dropped:
        raise ValueError(f"the edit changes {len(dropped)} tensors a LoRA cannot carry ({_names(dropped)}); a LoRA adds "
                         "only to linear and convolution weights: pass `allow_dropped=True` to export without them "
                         "(the LoRA then differs from the edit), or merge the whole edit into the model instead")  # fmt: skip
    if not deltas:
        raise ValueError("the edit changes no linear or convolution weight: there is no LoRA to export")
    limits = {key: rank_limit(w) for key, (_, _, w) in deltas.items()}
    largest = min(limits.values())
    if rank > largest:
        key = min(limits, key=limits.get)
        shape = "x".join(str(n) for n in deltas[key][2].shape)
        raise ValueError(f"`rank={rank}` is larger than a LoRA of {key} ({shape}) can be; the largest rank every changed "
                         f"layer allows is {largest}")  # fmt: skip
    state, errors = {}, {}
    for key, (comp, module_name, p) in deltas.items():
        delta = edit.tensors[key].detach().to("cpu", torch.float64) - p.detach().to("cpu", torch.float64)
        a, b = factor(delta, rank)
        state[f"{comp}.{module_name}.lora_A.weight"] = a
        state[f"{comp}.{module_name}.lora_B.weight"] = b
        errors[key] = float((delta - product(a, b)).norm() / delta.norm())
    return LoraExport(state_dict=state, rank=rank, errors=errors, dropped=tuple(dropped), unchanged=tuple(unchanged),
                      base_fingerprint=edit.base_fingerprint, edit_digest=edit.digest)  # fmt: skip
