"""Datasets: sources and downloads, raw-layout readers, synthetic twins, prepare, torch Dataset.

Owns ``diffris fetch`` and ``diffris prepare``: ``data/raw/<scale>/<dataset>/`` and
``data/prepared/<scale>/<dataset>/``. The first stage of the data flow.

Imports: the shared basics only (config, errors, fileio).
"""

from diffris.data.readers import RawSample, read_raw

__all__ = ["RawSample", "read_raw"]
