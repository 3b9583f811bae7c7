"""The shared segment-cutting and numeric-row parsing of continuous-recording datasets."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skelssl.data.importers.segments import Segment, first_bad_row, locate_segments, parse_numeric_rows
from skelssl.errors import BadInputError

LABELS = "labels.txt"


def _seg(start: int, end: int, line: int, label: int = 0) -> Segment:
    return Segment(label=label, start=start, end=end, line=line)


# ------------------------------------------------------------------------------------ parse_numeric_rows
def test_parse_rows_values_and_lines() -> None:
    data = b"1 2 3\n\n 4.5  -6e-1 7\r\n8 9 10\n"
    rows, lines = parse_numeric_rows("f.txt", data, 3)
    np.testing.assert_array_equal(rows, [[1, 2, 3], [4.5, -0.6, 7], [8, 9, 10]])
    np.testing.assert_array_equal(lines, [1, 3, 4])


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        (b"1 2 3\n4 5\n6 7 8\n", 2, "has 2 values"),
        (b"1 2 3\n4 5 6 7\n", 2, "has 4 values"),
        (b"1 2 3\n4 x 6\n", 2, "'x' is not a number"),
        (b"1 2 3\n4,5 6 7\n", 2, "'4,5' is not a number"),  # right token count, not numbers
        (b"1 2 3\n4 5 6\n7 8", 3, "has 2 values"),  # truncated last line
    ],
)
def test_parse_rows_rejects_with_line(data: bytes, line: int, words: str) -> None:
    with pytest.raises(BadInputError) as err:
        parse_numeric_rows("f.txt", data, 3)
    assert err.value.line == line and words in err.value.reason


@pytest.mark.parametrize("data", [b"\n\n  \n", b"\xff\xfe\x00garbage"])
def test_parse_rows_rejects_empty_and_binary(data: bytes) -> None:
    with pytest.raises(BadInputError):
        parse_numeric_rows("f.txt", data, 3)


def test_parse_rows_keeps_nan_for_caller() -> None:
    rows, _ = parse_numeric_rows("f.txt", b"1 nan 3\n4 5 inf\n", 3)
    assert np.isnan(rows[0, 1]) and np.isinf(rows[1, 2])
    assert first_bad_row(rows, 0, 2) == 0
    assert first_bad_row(np.ones((4, 3)), 1, 3) is None


# ------------------------------------------------------------------------------------ locate_segments
def test_exclusive_end_maps_to_rows() -> None:
    ids = np.arange(10)
    clips, rejected = locate_segments(LABELS, [_seg(0, 4, 1), _seg(4, 10, 2)], ids, end_inclusive=False)
    assert not rejected
    assert [(c.lo, c.hi) for c in clips] == [(0, 4), (4, 10)]


def test_inclusive_end_uses_frame_ids_with_gaps_and_repeats() -> None:
    ids = np.array([10, 12, 12, 14, 20, 22])
    clips, rejected = locate_segments(LABELS, [_seg(11, 14, 1), _seg(15, 21, 2)], ids, end_inclusive=True)
    assert not rejected
    assert [(c.lo, c.hi) for c in clips] == [(1, 4), (4, 5)]  # 12, 12, 14 | 20


@pytest.mark.parametrize(
    ("seg", "words"),
    [
        (_seg(5, 3, 7), "starts after it ends"),
        (_seg(4, 4, 7), "is empty"),
        (_seg(-1, 3, 7), "outside the recording"),
        (_seg(5, 11, 7), "outside the recording"),
        (_seg(2, 10**12, 7), "outside the recording"),
    ],
)
def test_bad_ranges_rejected_with_label_line(seg: Segment, words: str) -> None:
    clips, rejected = locate_segments(LABELS, [_seg(0, 2, 1), seg], np.arange(10), end_inclusive=False)
    assert [(c.lo, c.hi) for c in clips] == [(0, 2)]
    assert len(rejected) == 1 and rejected[0].line == 7 and words in rejected[0].reason
    assert rejected[0].path == LABELS


def test_gap_without_frames_rejected() -> None:
    ids = np.array([0, 1, 2, 10, 11])
    _, rejected = locate_segments(LABELS, [_seg(4, 8, 3)], ids, end_inclusive=True)
    assert rejected[0].line == 3 and "no recorded frame" in rejected[0].reason


def test_overlaps_rejected_both_sides_but_shared_boundary_allowed() -> None:
    ids = np.arange(100)
    segs = [_seg(0, 10, 1), _seg(10, 20, 2), _seg(30, 60, 3), _seg(40, 50, 4), _seg(70, 80, 5)]
    clips, rejected = locate_segments(LABELS, segs, ids, end_inclusive=True)
    assert [c.segment.line for c in clips] == [1, 2, 5]
    assert [r.line for r in rejected] == [3, 4]
    assert "line 4" in rejected[0].reason and "line 3" in rejected[1].reason
    clips, rejected = locate_segments(LABELS, segs, ids, end_inclusive=True, overlap="allow")
    assert len(clips) == 5 and not rejected


def test_duplicate_segments_overlap() -> None:
    clips, rejected = locate_segments(LABELS, [_seg(5, 5, 1), _seg(5, 5, 2)], np.arange(9), end_inclusive=True)
    assert not clips and [r.line for r in rejected] == [1, 2]


def test_overlap_with_earlier_long_segment_detected() -> None:
    # 3's start is inside 1 (which reaches furthest) although 2 lies in between.
    segs = [_seg(0, 50, 1), _seg(5, 8, 2), _seg(20, 30, 3)]
    clips, rejected = locate_segments(LABELS, segs, np.arange(60), end_inclusive=False)
    assert not clips and [r.line for r in rejected] == [1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(1, 40),
    raw=st.lists(st.tuples(st.integers(-5, 50), st.integers(-5, 50)), max_size=8),
    inclusive=st.booleans(),
)
def test_property_every_segment_accounted_for(length: int, raw: list[tuple[int, int]], inclusive: bool) -> None:
    ids = np.arange(length) * 2  # gaps between frame ids
    segs = [_seg(a, b, i + 1) for i, (a, b) in enumerate(raw)]
    clips, rejected = locate_segments(LABELS, segs, ids, end_inclusive=inclusive)
    assert sorted([c.segment.line for c in clips] + [r.line for r in rejected]) == [s.line for s in segs]
    for clip in clips:
        seg = clip.segment
        assert 0 <= clip.lo < clip.hi <= length
        covered = ids[clip.lo : clip.hi]
        assert covered.min() >= seg.start
        assert (covered <= seg.end).all() if inclusive else (covered < seg.end).all()
        inside = (ids >= seg.start) & ((ids <= seg.end) if inclusive else (ids < seg.end))
        assert inside.sum() == clip.hi - clip.lo  # every row in range is taken
    kept = sorted((c.segment.start, c.segment.end) for c in clips)
    for (_, end_a), (start_b, _) in itertools.pairwise(kept):
        assert start_b >= end_a  # at most a shared boundary frame


def test_label_path_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    _, rejected = locate_segments(path, [_seg(3, 1, 9)], np.arange(5), end_inclusive=False)
    assert rejected[0].path == str(path)
