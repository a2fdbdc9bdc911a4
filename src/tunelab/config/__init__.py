"""Typed schemas for every config group and the checks that run before any work starts."""

from tunelab.config.errors import ConfigError
from tunelab.config.schema import check_config

__all__ = ["ConfigError", "check_config"]
