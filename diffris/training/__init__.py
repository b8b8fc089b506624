"""Training a run: its spec from params.yaml, its folder, batches, the loop (accelerate),
checkpoint and resume, its log, ``diffris launch`` and ``diffris train``.

Validation is part of training (the best-on-val checkpoint is chosen here), so the scoring loop
(``validation``) and the LAVT/RMSIN metrics (``metrics``) live in this package; evaluation runs
the same loop on a finished run. So the arrow runs one way: evaluation imports training, and
training never imports evaluation. The run folder (``run_folder``) is training's output, and
whatever loads a trained model reads it through this package.

Imports: the basics, ``data``, ``models``, ``features``.
"""
