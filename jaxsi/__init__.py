"""jaxsi: a JAX/Flax framework for self-improving language models.

A method is a composition, not a trainer: rollout → rewards → a chain of
trajectory transforms → weighted objective terms → a jitted update.
"""

__version__ = "0.1.0"
