"""DM-SR (Distribution-Matching SR): a timestep estimator and a timestep-aware VAE encoder in front of a
frozen SD-Turbo.  No official code or weights exist; srbench's port is trainable (``srbench train dmsr``,
see README.md).  Importing this package registers the ``dmsr`` method and its weights manifest; heavy
imports (diffusers) happen in ``load()``."""

from methods.dmsr import method, weights  # noqa: F401
