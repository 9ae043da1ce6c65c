"""Erasure methods, each a config dataclass and ``erase(pipe, concepts, cfg, generator) -> Edit``, by name."""

from unsee.methods import eap, eap_pgd, esd, neutral, robust  # noqa: F401  (registers the methods)
from unsee.methods.base import MethodConfig, Run, config_class, config_from_dict, erase, make_config, methods

__all__ = ["MethodConfig", "Run", "config_class", "config_from_dict", "erase", "make_config", "methods"]
