"""The byte layout of stored online state: a version-tagged header, then raw arrays.

What it knows: how :class:`model.features.FeatureState` and
:class:`model.scorer.AccountState` become bytes for the service's account store and back,
without pickle and without a zip container (``np.savez`` cost 1.5-3 ms per account; this
layout costs tens of microseconds). Every blob is::

    magic     4 bytes   b"DWFS" (feature state) or b"DWAS" (account state)
    version   uint16    little-endian; readers name the versions they read
    length    uint32    little-endian byte length of the JSON header
    header    JSON      {"meta": {...scalars...}, "arrays": [[name, dtype, shape], ...]}
    arrays    raw       each array's C-order bytes, in header order, no padding

Arrays are copied out on reading (states are extended in place afterwards), and the total
length is checked, so a truncated or foreign blob fails with a clear :class:`StateFormatError`
instead of a wrong score.

What it does not know: what the fields mean (each state class lists its own).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

_PREFIX = struct.Struct("<4sHI")  # magic, version, header length


class StateFormatError(ValueError):
    """Stored state that this version of distillwatch cannot read."""


def pack(magic: bytes, version: int, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> bytes:
    """One blob: ``meta`` (JSON-able scalars, lists, dicts) and ``arrays`` (numpy arrays)."""
    parts: list[bytes] = []
    layout = []
    for name, value in arrays.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        layout.append([name, arr.dtype.str, list(arr.shape)])
        parts.append(arr.tobytes())
    header = json.dumps({"meta": meta, "arrays": layout}, separators=(",", ":")).encode()
    return b"".join([_PREFIX.pack(magic, version, len(header)), header, *parts])


def unpack(
    data: bytes, magic: bytes, versions: tuple[int, ...], what: str
) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
    """(version, meta, arrays) of a blob written by :func:`pack` with ``magic``.

    Raises :class:`StateFormatError` naming ``what`` when the blob is not such a state, is
    of a version not in ``versions``, or is cut short.
    """
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise StateFormatError(f"{what}: {len(view)} bytes is too short to be a stored state")
    found, version, header_len = _PREFIX.unpack_from(view)
    if found != magic:
        raise StateFormatError(
            f"{what}: not a distillwatch {what} (starts with {bytes(view[:4])!r}, "
            f"expected {magic!r})"
        )
    if version not in versions:
        newest = max(versions)
        hint = (
            "written by a newer distillwatch; upgrade to read it"
            if version > newest
            else "no longer readable; start the account afresh"
        )
        raise StateFormatError(
            f"{what}: stored format version {version}, this distillwatch reads "
            f"{', '.join(map(str, versions))} ({hint})"
        )
    offset = _PREFIX.size + header_len
    try:
        header = json.loads(bytes(view[_PREFIX.size : offset]))
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            if any(not isinstance(d, int) or d < 0 for d in shape):
                raise StateFormatError(f"{what}: corrupt header (array {name!r} shape {shape})")
            count = math.prod(shape)
            size = count * dt.itemsize
            if offset + size > len(view):
                raise StateFormatError(f"{what}: truncated ({len(view)} bytes, array {name!r})")
            arrays[name] = (
                np.frombuffer(view, dtype=dt, count=count, offset=offset).reshape(shape).copy()
            )
            offset += size
        meta = header["meta"]
    except StateFormatError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFormatError(f"{what}: corrupt header ({exc})") from exc
    if offset != len(view):
        raise StateFormatError(f"{what}: {len(view) - offset} unexpected trailing bytes")
    return version, meta, arrays
