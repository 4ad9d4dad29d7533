"""The reference's factory entry point: ``get_optimizer(name)``."""

from celo.optimizers.registry import UnknownOptimizerError, get_optimizer, is_learned, names

__all__ = ["UnknownOptimizerError", "get_optimizer", "is_learned", "names"]
