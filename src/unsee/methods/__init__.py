"""Erasure methods, each a config dataclass and ``erase(pipe, concepts, cfg, generator) -> Edit``, by name."""

from unsee.methods import age, eap, eap_pgd, esd, neutral, robust, uce  # noqa: F401  (registers the methods)
from unsee.methods.base import EraseConfig, MethodConfig, Run, config_class, config_from_dict, erase, make_config, methods

__all__ = ["EraseConfig", "MethodConfig", "Run", "config_class", "config_from_dict", "erase", "make_config", "methods"]
