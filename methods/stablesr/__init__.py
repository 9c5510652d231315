"""StableSR (Wang et al., IJCV 2024): SD 2.1-base + time-aware encoder/SFT + CFW, aggregation sampling.

Importing this package registers the ``stablesr`` method.  Modules, in reading order: ``encoder``
(time-aware encoder), ``sft`` (SFT layers hooked into a diffusers UNet), ``cfw`` (CFW in the VAE
decoder), ``convert`` (official Lightning checkpoints → diffusers), ``sampler`` (respaced DDPM/DDIM with
aggregation sampling), ``geometry`` / ``noise`` / ``vaes`` (the authors' scripts' sizes and padding,
random draws, and choice of VAE encoder), ``method`` (the plugin), ``weights`` (manifest), ``testing``
(tiny random models).
"""

from methods.stablesr.method import StableSR

__all__ = ["StableSR"]
