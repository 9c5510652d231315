"""Shared Stable Diffusion plumbing, written once and reused by every diffusion-prior port.

Modules (import them directly; this package imports nothing heavy on its own):

- :mod:`srbench.diffusion.sd`        -- load SD parts with diffusers/transformers (`load_sd_components`),
  turn offline / missing-file errors into :class:`~srbench.interface.WeightsMissing`, pick dtypes.
- :mod:`srbench.diffusion.prompts`   -- `PromptEmbeddingCache`: a fixed prompt encoded once.
- :mod:`srbench.diffusion.vae`       -- VAE encode / decode with the config's latent scale; [0,1] <-> [-1,1].
- :mod:`srbench.diffusion.color`     -- AdaIN, wavelet and YCbCr colour correction (StableSR / InvSR).
- :mod:`srbench.diffusion.tiling`    -- tile grids, Gaussian tile weights, weighted aggregation
  (image space and latent space).
- :mod:`srbench.diffusion.schedules` -- alpha-bar tables and sigma = sqrt((1 - abar) / abar).
- :mod:`srbench.diffusion.checkpoints` -- safe loading of official Lightning ``.ckpt`` files.
- :mod:`srbench.diffusion.ldm_keys`  -- diffusers -> ldm (official) key names for UNet and VAE.
"""
