"""The VCF Zarr spec's missing and fill values, by dtype, and arrays made of them.

Integers: -1 missing, -2 fill. Floats: NaN with payload 0x7F800001 (missing) or 0x7F800002 (fill).
Strings: "." missing, "" fill. Booleans have neither (both False). A field's "." in VCF is one
missing value followed by fill values along its trailing dimension.
"""

from __future__ import annotations

import numpy as np

_FLOAT_BITS = (0x7F800001, 0x7F800002)


def is_string(dtype) -> bool:
    return getattr(dtype, "kind", "") in ("T", "O", "U", "S")


def codes(dtype):
    """(missing, fill) of the VCF Zarr spec for a dtype."""
    if is_string(dtype):
        return ".", ""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return False, False
    if dtype.kind in "iu":
        return -1, -2
    bits = np.array(_FLOAT_BITS, dtype=np.int32).view(np.float32).astype(dtype)
    return bits[0], bits[1]


def _is_code(values, code_index: int):
    values = np.asarray(values)
    if is_string(values.dtype):
        return values == (".", "")[code_index]
    if values.dtype.kind == "b":
        return np.zeros(values.shape, dtype=bool)
    if values.dtype.kind in "iu":
        return values == (-1, -2)[code_index]
    if values.dtype == np.float32:
        return values.view(np.int32) == _FLOAT_BITS[code_index]
    return np.isnan(values) if code_index == 0 else np.zeros(values.shape, dtype=bool)


def is_missing(values):
    return _is_code(values, 0)


def is_fill(values):
    return _is_code(values, 1)


def empty(shape, dtype, dot: bool = True):
    """An array of "." values: missing first, then fill along the last (trailing) axis."""
    missing, fill = codes(dtype)
    out = np.full(shape, fill, dtype=dtype)
    if dot and len(shape) > 2:
        out[..., 0] = missing
    elif dot:
        out[...] = missing
    return out


def fit(values, width: int, fill):
    """Values padded with fill (or cut: only fill is cut) to ``width`` along the last axis."""
    have = values.shape[-1]
    if have == width:
        return values
    if have > width:
        return values[..., :width]
    pad = [(0, 0)] * (values.ndim - 1) + [(0, width - have)]
    return np.pad(values, pad, constant_values=fill)


def count(rows):
    """How many values each row holds before its first fill."""
    fill = is_fill(rows)
    return np.where(fill.any(axis=1), np.argmax(fill, axis=1), rows.shape[1])


def is_dot(rows):
    """Rows that are a VCF "." (missing, then only fill)."""
    return is_missing(rows[:, 0]) & (is_fill(rows[:, 1:]).all(axis=1) if rows.shape[1] > 1 else True)
