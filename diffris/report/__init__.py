"""Reporting: the paper's tables beside the regenerated rows, the figures, the comparison.

- ``tables``: ``results/reference/<name>.csv`` + metrics JSON -> ``tables/<name>.csv``
  (paper rows and regenerated rows, told apart by a ``source`` column);
- ``figures``: Fig. 8 from ``tables/fig8.csv``; Figs. 5-7 from prediction PNGs and prepared data;
- ``comparison``: ``comparison.md``, regenerated against paper cell by cell.

Which experiment, dataset and split feed each row is set in params.yaml (``tables``, ``figures``).
"""
