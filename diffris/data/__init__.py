"""Datasets: sources and downloads, raw-layout readers, synthetic twins, prepare, torch Dataset."""

from diffris.data.readers import RawSample, read_raw

__all__ = ["RawSample", "read_raw"]
