"""Scoring finished runs: ``diffris evaluate`` (metrics JSON, per-sample CSV, prediction PNGs,
the shuffled-expression control) and ``diffris predict`` on one's own images.

``evaluate.load_for_evaluation`` is the one set-up that evaluation and the studies' corrupted
evaluation and attention maps share. The scoring loop and the metrics are training's
(``diffris.training.validation``, ``diffris.training.metrics``): validation needs them first.

Imports: the basics, ``data``, ``models``, ``features``, ``training``.
"""
