"""Attacks on erased models, each a config dataclass and ``attack(pipe, edit, target, cfg, generator)``, by name.

Prompt attacks (``inversion``, ``token-search``, ``synonym``) change what is asked; the probes beyond
the text channel (``noise``, ``completion``, ``inpaint``, ``guided``) change how the images are drawn.
"""

from unsee.attacks import (  # noqa: F401  (registers the attacks)
    completion,
    guided,
    inpaint,
    inversion,
    noise,
    synonym,
    token_search,
)
from unsee.attacks.base import (
    AttackConfig,
    AttackResult,
    AttackRun,
    Found,
    Sampler,
    Target,
    asr_best_of,
    attack,
    attacks,
    config_class,
    config_from_dict,
    make_config,
)

__all__ = ["AttackConfig", "AttackResult", "AttackRun", "Found", "Sampler", "Target", "asr_best_of", "attack", "attacks",
           "config_class", "config_from_dict", "make_config"]  # fmt: skip
