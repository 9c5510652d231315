"""Built-in srbench method plugins; importing this package registers them all."""

from methods import bicubic, dmsr, dossr, invsr, precomputed, realesrgan, stablesr  # noqa: F401
