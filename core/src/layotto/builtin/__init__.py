"""Built-in components. They register through the same `layotto` entry point as any plugin."""

from layotto.builtin.plugin import layotto_components

__all__ = ["layotto_components"]
