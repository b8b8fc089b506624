"""Errors the CLI reports as one clear line instead of a traceback."""


class DiffrisError(Exception):
    """Base class for expected failures: bad input, bad config, missing data, no network."""


class ConfigError(DiffrisError):
    """params.yaml (or a value derived from it) is invalid."""


class DataError(DiffrisError):
    """A dataset file is missing, unreadable or inconsistent. The message names the file (and line)."""


class FetchError(DiffrisError):
    """A download failed or a checksum did not match."""
