"""Built-in srbench method plugins; importing this package registers them all."""

from methods import bicubic  # noqa: F401
