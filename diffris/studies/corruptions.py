"""Synthetic adverse conditions for remote-sensing images: haze, clouds, sensor noise, blur, JPEG.

Each corruption takes a prepared image as the network sees it (RGB uint8 ``[S, S, 3]``, see
``diffris.data.dataset``) and returns one of the same shape and dtype. It is deterministic for
(corruption, severity, sample index): its random numbers come from
``numpy.random.default_rng([crc32(name), severity, index])``, so a sample gets the same corrupted
image on every run and every machine. Sizes are relative to the image side ``S``, so a corruption
looks the same at the mini scale (64 px) and the paper scale (512 px). Pure numpy (JPEG: PIL).

=========  ==========================================  ==============  ======  ======
name       model                                       severity 1      2       3
=========  ==========================================  ==============  ======  ======
haze       I = J·t + A·(1 − t); airlight A = (232,      t = 0.70        0.50    0.30
           236, 240); t varies by ±0.05 over a
           smooth field
clouds     the top ``coverage`` share of a 5-octave     coverage 0.20   0.40    0.60
           value-noise field turns to cloud (grey
           245; alpha 0 → 1 over 0.08 of the field's
           range, ½ at the threshold)
noise      i.i.d. Gaussian per pixel and band           σ = 8 grey      16      32
           (sensor noise)                               levels
blur       separable Gaussian, reflected borders;       σ = S/128       S/64    S/32
           σ relative to the image side S
jpeg       PIL JPEG round trip, 4:2:0 subsampling       quality 25      15      7
=========  ==========================================  ==============  ======  ======

Every severity is stronger than the one below it: a lower transmission, more cloud, more noise, a
wider blur, a lower quality. Results are rounded and clipped to 0..255.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from diffris.errors import DiffrisError

SEVERITIES = (1, 2, 3)
HAZE_TRANSMISSION = (0.70, 0.50, 0.30)
HAZE_AIRLIGHT = (232.0, 236.0, 240.0)  # a bright, slightly blue-white sky
HAZE_VARIATION = 0.05  # transmission varies by up to this much over the image
CLOUD_COVERAGE = (0.20, 0.40, 0.60)
CLOUD_BRIGHTNESS = 245.0
CLOUD_EDGE = 0.08  # share of the field's range over which a cloud goes from clear to opaque
CLOUD_OCTAVES = 5
NOISE_SIGMA = (8.0, 16.0, 32.0)
BLUR_SIGMA = (1 / 128, 1 / 64, 1 / 32)  # times the image side
JPEG_QUALITY = (25, 15, 7)


class CorruptionError(DiffrisError):
    """A bad option of the adverse-conditions study: an unknown corruption, a severity out of range."""


def rng_for(name: str, severity: int, index: int) -> np.random.Generator:
    """The random numbers of one corrupted sample; the same on every machine."""
    return np.random.default_rng([zlib.crc32(name.encode()), severity, index])


def smooth_field(rng: np.random.Generator, size: int, octaves: int = CLOUD_OCTAVES) -> np.ndarray:
    """Multi-octave value noise in [0, 1], float64 ``[size, size]``: octave k is a grid of
    ``2**(k+1)`` cells of uniform values, bilinearly interpolated, with amplitude ``0.5**k``."""
    field = np.zeros((size, size))
    for k in range(octaves):
        cells = 2 ** (k + 1)
        grid = rng.random((cells + 1, cells + 1))
        field += 0.5**k * bilinear(grid, size)
    low, high = field.min(), field.max()
    return (field - low) / (high - low) if high > low else np.zeros_like(field)


def bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """``grid`` (corner values) interpolated onto ``size`` × ``size`` pixel centres."""
    pos = (np.arange(size) + 0.5) * (grid.shape[0] - 1) / size
    i = np.minimum(pos.astype(int), grid.shape[0] - 2)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def haze(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric scattering: the scene seen through a transmission t, the rest airlight."""
    variation = HAZE_VARIATION * (2.0 * smooth_field(rng, image.shape[0]) - 1.0)
    t = (HAZE_TRANSMISSION[severity - 1] + variation)[..., None]
    return to_uint8(image * t + np.array(HAZE_AIRLIGHT) * (1.0 - t))


def clouds(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Cloud cover: the brightest ``coverage`` share of a smooth field becomes opaque cloud."""
    field = smooth_field(rng, image.shape[0])
    threshold = np.quantile(field, 1.0 - CLOUD_COVERAGE[severity - 1])
    alpha = np.clip((field - threshold) / CLOUD_EDGE + 0.5, 0.0, 1.0)[..., None]
    return to_uint8(image * (1.0 - alpha) + CLOUD_BRIGHTNESS * alpha)


def noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: additive Gaussian, independent per pixel and band."""
    return to_uint8(image + rng.normal(0.0, NOISE_SIGMA[severity - 1], image.shape))


def blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Optical blur: a separable Gaussian of σ = side × ``BLUR_SIGMA``, borders reflected."""
    sigma = BLUR_SIGMA[severity - 1] * image.shape[0]
    radius = max(1, int(np.ceil(3.0 * sigma)))
    weights = np.array([math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)])  # libm, not SIMD
    weights /= weights.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):  # rows, then columns
        out = np.ascontiguousarray(out.swapaxes(0, 1)) if axis else out
        padded = np.pad(out, [(radius, radius), (0, 0), (0, 0)], mode="reflect")
        blurred = np.zeros_like(out)
        for k, w in enumerate(weights):  # elementwise multiply-adds in a fixed order: the same bits anywhere
            blurred += w * padded[k : k + len(out)]
        out = blurred.swapaxes(0, 1) if axis else blurred
    return to_uint8(out)


def jpeg(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Lossy compression: a JPEG round trip through PIL at a fixed quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY[severity - 1], subsampling="4:2:0")
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.uint8)


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "haze": haze,
    "clouds": clouds,
    "noise": noise,
    "blur": blur,
    "jpeg": jpeg,
}
SEVERITY_PARAMETER = {  # the parameter that grows with severity, and its value at each
    "haze": ("transmission", HAZE_TRANSMISSION),
    "clouds": ("coverage", CLOUD_COVERAGE),
    "noise": ("sigma", NOISE_SIGMA),
    "blur": ("sigma_per_side", BLUR_SIGMA),
    "jpeg": ("quality", JPEG_QUALITY),
}
FIXED_PARAMETERS = {
    "haze": {"airlight": list(HAZE_AIRLIGHT), "variation": HAZE_VARIATION},
    "clouds": {"brightness": CLOUD_BRIGHTNESS, "edge": CLOUD_EDGE, "octaves": CLOUD_OCTAVES},
}


def parameters(name: str, severity: int) -> dict:
    """The parameters of corruption ``name`` at ``severity`` (recorded beside its metrics)."""
    check_condition(name, severity)
    key, values = SEVERITY_PARAMETER[name]
    return {key: values[severity - 1], **FIXED_PARAMETERS.get(name, {})}


def corrupt(image: np.ndarray, name: str, severity: int, index: int) -> np.ndarray:
    """Sample ``index``'s image under corruption ``name`` at ``severity`` (RGB uint8 in and out)."""
    check_condition(name, severity)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise CorruptionError(f"expected a square RGB uint8 image [S, S, 3], got {image.dtype} {image.shape}")
    return CORRUPTIONS[name](image, severity, rng_for(name, severity, index))


def check_condition(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise CorruptionError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        expected = ", ".join(map(str, SEVERITIES))
        raise CorruptionError(f"severity {severity} of {name!r} is out of range; expected one of {expected}")


def condition_name(name: str | None, severity: int | None) -> str:
    """``clean`` or ``<corruption>-<severity>``: the stem of an evaluation's files."""
    return "clean" if name is None else f"{name}-{severity}"


def parse_corruptions(text: str, flag: str = "--corruptions") -> tuple[str, ...]:
    """``haze,clouds`` -> ("haze", "clouds"); each known, none twice."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise CorruptionError(f"{flag}: no corruption given; expected some of {', '.join(CORRUPTIONS)}")
    for name in names:
        if name not in CORRUPTIONS:
            raise CorruptionError(f"{flag}: unknown corruption {name!r}; expected some of {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise CorruptionError(f"{flag}: {text!r} names a corruption twice")
    return names


def parse_severities(text: str, flag: str = "--severities") -> tuple[int, ...]:
    """``1,2,3`` -> (1, 2, 3); each in ``SEVERITIES``, none twice, sorted."""
    expected = ", ".join(map(str, SEVERITIES))
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CorruptionError(f"{flag}: {text!r} is not a comma-separated list of integers ({expected})") from None
    if not values:
        raise CorruptionError(f"{flag}: no severity given; expected some of {expected}")
    for value in values:
        if value not in SEVERITIES:
            raise CorruptionError(f"{flag}: severity {value} is out of range; expected some of {expected}")
    if len(set(values)) != len(values):
        raise CorruptionError(f"{flag}: {text!r} names a severity twice")
    return tuple(sorted(values))
