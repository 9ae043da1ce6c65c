"""Attacks on erased models, each a config dataclass and ``attack(pipe, edit, target, cfg, generator)``, by name."""

from unsee.attacks import inversion, synonym, token_search  # noqa: F401  (registers the attacks)
from unsee.attacks.base import (
    AttackConfig,
    AttackResult,
    AttackRun,
    Found,
    Target,
    attack,
    attacks,
    config_class,
    config_from_dict,
    make_config,
)

__all__ = ["AttackConfig", "AttackResult", "AttackRun", "Found", "Target", "attack", "attacks", "config_class",
           "config_from_dict", "make_config"]  # fmt: skip
