"""Image transforms of the reference pipeline, in numpy.

``resize_bilinear`` reproduces ``tf.image.resize(images, size)`` with its
defaults (bilinear, ``antialias=False``), which runs TF's ``ResizeBilinear``
kernel with ``half_pixel_centers=True``. For an output index ``o`` along an
axis of scale ``s = in_size / out_size`` the source coordinate is
``c = (o + 0.5)·s − 0.5``; the two taps are ``max(floor(c), 0)`` and
``min(ceil(c), in_size − 1)`` and the weight of the upper tap is
``c − floor(c)``. All of it is float32, and the interpolation runs along the
width first, then the height: ``top = tl + (tr − tl)·wx``, ``bottom`` alike,
``out = top + (bottom − top)·wy`` (TF's ``compute_lerp``).

``jax.image.resize(..., "linear")`` antialiases by default when downsampling,
which changes 28→8 pixels by up to 100/255; with ``antialias=False`` it agrees
with this function to float32 rounding (the tests check both). Numpy keeps the
work on the host, where the data lives, and fixes TF's operation order.
"""

from __future__ import annotations

import numpy as np


def _axis_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower tap, upper tap and upper weight for one axis (TF half-pixel centers)."""
    scale = np.float32(in_size) / np.float32(out_size)
    coord = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(coord)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(coord), in_size - 1).astype(np.int64)
    weight = (coord - floor).astype(np.float32)
    return lower, upper, weight


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, H, W, C)`` images like ``tf.image.resize``.

    Args:
        images: any real dtype (typically uint8); converted to float32.
        size: ``(height, width)`` of the output.

    Returns:
        float32 ``(N, size[0], size[1], C)``; values are not rounded, as in TF.
        An input already of the requested size is returned as float32 unchanged.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) images, got shape {images.shape}")
    out_h, out_w = (int(s) for s in size)
    _, in_h, in_w, _ = images.shape
    if (in_h, in_w) == (out_h, out_w):
        return images.astype(np.float32)
    # TF's compute_lerp: top = tl + (tr - tl)·wx, bottom alike, then
    # top + (bottom - top)·wy. The four corner planes are gathered in the input
    # dtype before the float32 cast, which keeps a 60,000-image downsample fast.
    lo_h, hi_h, wy = _axis_taps(in_h, out_h)
    lo_w, hi_w, wx = _axis_taps(in_w, out_w)
    upper_rows, lower_rows = images[:, lo_h], images[:, hi_h]
    tl, tr = upper_rows[:, :, lo_w].astype(np.float32), upper_rows[:, :, hi_w].astype(np.float32)
    bl, br = lower_rows[:, :, lo_w].astype(np.float32), lower_rows[:, :, hi_w].astype(np.float32)
    wx = wx[None, None, :, None]
    top = tl + (tr - tl) * wx
    bottom = bl + (br - bl) * wx
    # Advanced indexing on inner axes leaves a non-C layout; batches gather rows fastest from C.
    return np.ascontiguousarray(top + (bottom - top) * wy[None, :, None, None])


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """Channel mean keeping a channel axis of 1, as the reference does after /255.

    Summed channel by channel in float32, then divided by the channel count:
    ``numpy.mean`` over a short last axis is several times slower per batch.
    """
    channels = images.shape[-1]
    total = images[..., :1].astype(np.float32)
    for c in range(1, channels):
        total += images[..., c : c + 1]
    return total / np.float32(channels)


def scale_images(images: np.ndarray, max_value: float, grayscale: bool) -> np.ndarray:
    """``float32(images) / max_value``, then the optional channel mean."""
    x = images.astype(np.float32) / np.float32(max_value)
    return to_grayscale(x) if grayscale else x
