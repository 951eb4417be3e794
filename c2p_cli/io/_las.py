"""LAS / LAZ point clouds through laspy (LAZ decompression by lazrs, in Rust): the `las` extra.

The header is read first; its point count is checked against `max_points` and, for uncompressed
LAS, against the file's size before any point is read. Points are read a chunk at a time and
scaled to float64 coordinates (LAS stores scaled integers, often georeferenced).
"""

from __future__ import annotations

import numpy as np

from ._common import Geometry, _ParseError, _short, _Source

_EXTRA = "pip install 'clip2point[las]'"
_CHUNK_POINTS = 1 << 18


def _read_las(src: _Source) -> Geometry:
    try:
        import laspy
    except ImportError:
        raise _ParseError(f"reading LAS/LAZ files needs laspy and lazrs: {_EXTRA}") from None
    with src.open() as fh:
        if fh.read(4) != b"LASF":
            raise _ParseError("not a LAS/LAZ file (does not start with 'LASF')")
    try:
        with laspy.open(src.path) as reader:
            header = reader.header
            n = int(header.point_count)
            src.check_count(n, "points")
            if n == 0:
                raise _ParseError("no points")
            compressed = header.point_format.id >= 128 or src.path.suffix.lower() == ".laz" or _is_laz(header)
            if not compressed:
                need = int(header.offset_to_point_data) + n * int(header.point_format.size)
                if need > src.size:
                    held = max(0, (src.size - int(header.offset_to_point_data)) // int(header.point_format.size))
                    raise _ParseError(f"truncated LAS: header says {n} points, file holds {held}")
            out = np.empty((n, 3), dtype=np.float64)
            done = 0
            for chunk in reader.chunk_iterator(_CHUNK_POINTS):
                k = min(len(chunk), n - done)
                out[done : done + k, 0] = np.asarray(chunk.x)[:k]
                out[done : done + k, 1] = np.asarray(chunk.y)[:k]
                out[done : done + k, 2] = np.asarray(chunk.z)[:k]
                done += k
                if done >= n:
                    break
    except _ParseError:
        raise
    except ImportError:
        raise _ParseError(f"reading LAZ files needs a LAZ backend (lazrs): {_EXTRA}") from None
    except Exception as e:  # laspy raises its own errors, ValueError, struct.error, lazrs errors...
        message = _short(e, 140)
        if "LazBackend" in message or ("lazrs" in message.lower() and "not" in message.lower()):
            raise _ParseError(f"reading LAZ files needs a LAZ backend (lazrs): {_EXTRA}") from None
        raise _ParseError(f"cannot read LAS/LAZ file: {message}") from None
    if done < n:
        raise _ParseError(f"truncated LAS/LAZ: header says {n} points, file holds {done}")
    return Geometry(out)


def _is_laz(header) -> bool:
    try:
        return bool(header.are_points_compressed)
    except AttributeError:
        return False
