"""Reporting: the paper's tables beside the regenerated rows, the figures, the comparison.

- ``tables``: ``results/reference/<name>.csv`` + metrics JSON of every seed -> ``tables/<name>.csv``
  (paper rows and regenerated rows, told apart by a ``source`` column) and
  ``tables/<name>-intervals.csv`` (the uncertainty of every regenerated cell);
- ``intervals``: seed spread and (paired) bootstrap intervals from the per-sample CSVs;
- ``figures``: Fig. 8 from ``tables/fig8.csv``; Figs. 5-7 from prediction PNGs and prepared data;
- ``comparison``: ``comparison.md``, regenerated against paper cell by cell, with intervals;
- ``check``: ``diffris check-results``, a rerun against the committed tables and intervals.

Also ``curves`` (training curves as CSV, from each run's log). Which experiment, dataset and
split feed each row is set in params.yaml (``tables``, ``figures``).

Imports: the basics and ``training`` (the metrics, the run log). It reads what evaluation wrote
(metrics JSON, per-sample CSVs) as files, and never builds a model.
"""
