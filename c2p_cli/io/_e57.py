"""ASTM E57 scans through pye57 (libE57Format, C++): the `e57` extra.

libE57Format is a C++ parser, so the file is checked here first: the 48-byte header (signature,
physical length equal to the file's size, page size, XML section inside the file), then the XML
section itself, parsed by Python with DTDs refused, whose declared point counts must be within
`max_points` and whose binary sections must lie inside the file. Every scan is read with its pose
applied (pye57's read_scan), and the scans are concatenated.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np

from ._common import Geometry, _ParseError, _read_exact, _short, _Source

_EXTRA = "pip install 'clip2point[e57]'"
_SIGNATURE = b"ASTM-E57"
_MAX_XML = 64 << 20


def _read_e57(src: _Source) -> Geometry:
    counts = _check_e57(src)
    try:
        import pye57
    except ImportError:
        raise _ParseError(f"reading E57 files needs pye57: {_EXTRA}") from None
    try:
        e57 = pye57.E57(str(src.path))
        try:
            parts = []
            for i in range(e57.scan_count):
                if e57.get_header(i).point_count > src.max_points:
                    raise _ParseError(f"scan {i} declares more than {src.max_points} points (max_points)")
                data = e57.read_scan(i, ignore_missing_fields=True)
                parts.append(np.stack([data["cartesianX"], data["cartesianY"], data["cartesianZ"]], axis=1))
        finally:
            e57.close()
    except _ParseError:
        raise
    except Exception as e:  # libE57Format raises its own exception types
        raise _ParseError(f"cannot read E57 file: {_short(e, 140)}") from None
    if not parts or not sum(len(p) for p in parts):
        raise _ParseError("no points" if counts == 0 or parts else "E57 file holds no scan")
    return Geometry(np.concatenate(parts).astype(np.float64, copy=False))


def _check_e57(src: _Source) -> int:
    """Header and XML checks before libE57Format sees the file; returns the declared point total."""
    with src.open() as fh:
        head = fh.read(48)
        if len(head) < 48 or head[:8] != _SIGNATURE:
            raise _ParseError("not an E57 file (does not start with 'ASTM-E57')")
        _major, _minor, length, xml_offset, xml_length, page = struct.unpack("<IIQQQQ", head[8:48])
        if length != src.size:
            raise _ParseError(f"E57 header says the file has {length} bytes, it has {src.size}")
        if page != 1024 or src.size % page:
            raise _ParseError(f"E57 page size {page} or file size {src.size} is not what the standard requires")
        if xml_length > _MAX_XML or xml_offset >= src.size:
            raise _ParseError("E57 XML section is too large or lies outside the file")
        # Pages hold 1020 data bytes and a 4-byte checksum.
        pages, data = [], 0
        page_index = xml_offset // page
        skip = xml_offset % page
        while data < xml_length:
            if (page_index + 1) * page > src.size:
                raise _ParseError("E57 XML section runs past the end of the file")
            fh.seek(page_index * page + skip)
            chunk = _read_exact(fh, 1020 - skip)
            take = min(len(chunk), xml_length - data)
            pages.append(chunk[:take])
            data += take
            page_index += 1
            skip = 0
        xml = b"".join(pages)
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise _ParseError("E57 XML declares a DTD or entities (refused)")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise _ParseError(f"E57 XML does not parse ({_short(e, 100)})") from None
    total = 0
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "points" and el.get("type") == "CompressedVector":
            try:
                count = int(el.get("recordCount", "0"))
                offset = int(el.get("fileOffset", "0"))
            except ValueError:
                raise _ParseError("E57 XML has a points section with a malformed recordCount or fileOffset") from None
            if count < 0 or offset < 0 or offset >= src.size:
                raise _ParseError("E57 XML has a points section outside the file or with a negative count")
            total += count
    if total > src.max_points:
        raise _ParseError(f"E57 XML declares {total} points, more than the limit of {src.max_points} (max_points)")
    return total
