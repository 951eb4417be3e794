"""E57 files whose XML declares more points than their data sections hold: libE57Format reads the
missing ones as garbage, so every section's recordCount is checked against the bytes its data
packets carry, field by field, before the C++ reader sees the file. The forged files keep valid
page checksums (CRC-32C), as an attacker's would."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from tests.cli_helpers import run_c2p
from tests.hostile_helpers import assert_one_line, changed_entries, read_error, run_files_of, tree_state

pye57 = pytest.importorskip("pye57")
PAGE, DATA = 1024, 1020


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of every E57 page, restated from its definition."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _xml_span(raw: bytes) -> list[tuple[int, int]]:
    """(physical offset, length) of each piece of the XML section, page by page."""
    xml_offset, xml_length = struct.unpack("<QQ", raw[24:40])
    spans, phys, left = [], xml_offset, xml_length
    while left:
        take = min(left, DATA - phys % PAGE)
        spans.append((phys, take))
        left -= take
        phys = (phys // PAGE + 1) * PAGE
    return spans


def forge(path: Path, out: Path, old: bytes, new: bytes) -> Path:
    """`path` with `old` replaced by `new` in its XML (the same length kept by dropping indentation
    spaces) and every page checksum recomputed."""
    raw = bytearray(path.read_bytes())
    spans = _xml_span(bytes(raw))
    xml = b"".join(raw[p : p + n] for p, n in spans)
    assert old in xml
    xml = xml.replace(old, new, 1).replace(b"\n  ", b"\n ", len(new) - len(old))
    assert len(xml) == sum(n for _, n in spans)
    pos = 0
    for p, n in spans:
        raw[p : p + n] = xml[pos : pos + n]
        pos += n
    for page in range(0, len(raw), PAGE):
        raw[page + DATA : page + PAGE] = struct.pack(">I", _crc32c(bytes(raw[page : page + DATA])))
    out.write_bytes(bytes(raw))
    return out


def _scan(path: Path, n: int, seed: int = 0, scans: int = 1, **extra) -> np.ndarray:
    pts = np.random.default_rng(seed).normal(size=(n, 3))
    e57 = pye57.E57(str(path), mode="w")
    for _ in range(scans):
        e57.write_scan_raw({"cartesianX": pts[:, 0], "cartesianY": pts[:, 1], "cartesianZ": pts[:, 2], **extra})
    e57.close()
    return pts


def test_the_forged_checksums_are_valid(tmp_path):
    _scan(tmp_path / "good.e57", 3000)
    bad = forge(tmp_path / "good.e57", tmp_path / "ten.e57", b'recordCount="3000"', b'recordCount="30000"')
    e57 = pye57.E57(str(bad))  # libE57Format opens it: every checksum verified
    assert e57.get_header(0).point_count == 30000
    e57.close()


@pytest.mark.parametrize("count", [30000, 3001])
def test_a_record_count_above_the_stored_points_is_refused(tmp_path, count):
    _scan(tmp_path / "good.e57", 3000)
    bad = forge(tmp_path / "good.e57", tmp_path / "lie.e57", b'recordCount="3000"', f'recordCount="{count}"'.encode())
    read_error(bad, f"E57 scan 0 declares {count} points, its data section holds 3000")


def test_many_fields_packed_bits_and_several_packets_and_scans_read_whole(tmp_path):
    n = 70_000  # several 64 KiB data packets, across many pages
    rng = np.random.default_rng(1)
    extra = {"intensity": rng.random(n), "colorRed": rng.integers(0, 256, n).astype(np.uint8),
             "rowIndex": np.arange(n, dtype=np.int32), "columnIndex": np.zeros(n, np.int32)}  # fmt: skip
    pts = _scan(tmp_path / "many.e57", n, scans=2, **extra)
    got = io.read_points(tmp_path / "many.e57")
    np.testing.assert_allclose(got, np.concatenate([pts, pts]).astype(np.float32), rtol=1e-6)
    # (every field counts: the 4-byte floats show one record too many, rowIndex its 17 bits each)
    bad = forge(tmp_path / "many.e57", tmp_path / "one_more.e57", f'recordCount="{n}"'.encode(), f'recordCount="{n + 1}"'.encode())
    read_error(bad, f"E57 scan 0 declares {n + 1} points, its data section holds {n}")


def test_a_section_header_pointing_outside_is_refused(tmp_path):
    _scan(tmp_path / "good.e57", 300)
    bad = forge(tmp_path / "good.e57", tmp_path / "far.e57", b'fileOffset="48"', b'fileOffset="9999999"')
    read_error(bad, "points section outside the file")
    bad = forge(tmp_path / "good.e57", tmp_path / "mid.e57", b'fileOffset="48"', b'fileOffset="1000"')
    read_error(bad, "E57 scan 0")


def test_classify_refuses_the_forged_scan_and_reads_the_others(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "scans"
    folder.mkdir()
    _scan(folder / "good.e57", 3000)
    _scan(folder / "other.e57", 2000, seed=1)
    forge(folder / "good.e57", folder / "forged.e57", b'recordCount="3000"', b'recordCount="30000"')
    before = tree_state(tmp_path)
    out = tmp_path / "rows.jsonl"
    r = run_c2p(["classify", folder, "--labels", "cube,torus", "--model", "c2p-tiny", "--pretrained", "none", "-o", out,
                 "--workers", "0"], capsys, monkeypatch)  # fmt: skip
    assert r.code == 1, r.err
    rows = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["good.e57"]["error"] is None and rows["other.e57"]["error"] is None and rows["good.e57"]["n_points"] == 1024
    failed = [line for line in r.err.splitlines() if line.startswith("failed ")]
    assert_one_line("\n".join(failed), f"failed {folder / 'forged.e57'}: E57 scan 0 declares 30000 points, its data section holds 3000")
    after = tree_state(tmp_path)
    assert changed_entries(before, after) == run_files_of(out, tmp_path)
