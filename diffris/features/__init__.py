"""Feature caches: what the frozen backbone makes of a prepared dataset, computed once.

The VAE, the CLIP text encoder and the UNet are frozen and deterministic (posterior mode, no
noise, no augmentation), so every run on the same data and backbone recomputes the same numbers
each epoch. ``diffris cache-features`` computes them once per (dataset, backbone)::

    features/<scale>/<dataset>/<backbone>/
      cache.json                   what the cache holds and what it was computed from (below)
      <split>/latents.npy          float32 [N, 4, S/8, S/8]  VAE posterior mode, unscaled
      <split>/text.npy             float32 [N, T, D]         CLIP last_hidden_state at T tokens
      <split>/attention_mask.npy   uint8   [N, T]
      <split>/tap{0,1,2,3}.npy     float32 UNet taps c1..c4 (only with --unet-taps)

``cache.json`` records the sha256 of the VAE, of the text encoder with its tokenizer files and
(with taps) of the UNet, the image size, the text length, the dtype, the timestep and latent
scaling the taps were computed with, per split the sha256 of ``images.npy`` and
``manifest.jsonl``, and the shape and sha256 of every array it holds. Training and evaluation
(``--features``) check all of it against the backbone, model config, data and array files they
were given and refuse a mismatch (``FeatureCacheError``); hashing the arrays costs about 1.3 s
per GB (0.77 GB/s on the 2-core development machine), some 3 s per open of an RRSIS-D train cache.

SD 1.x versions may share one VAE: ``--reuse-latents OTHER_CACHE`` hard-links (or copies) the
latents of another backbone's cache when its recorded VAE sha256, image size and data identity
equal this one's, and computes them otherwise; either way it says which it did.

Imports: the basics, ``data`` (prepared splits) and ``models`` (the frozen backbone).
"""
