"""No CSV cell the grader writes is a spreadsheet formula (issue 25, OWASP's CSV-injection rule).

A property test over any text: written by the grader's CSV writer and read back with the ``csv``
module, a cell either does not begin with ``=``, ``+``, ``-``, ``@``, tab or carriage return, or
is a plain number; nothing else of it changes. The whole-class export is tested in
``test_grader_walls.py`` with such student ids.
"""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from grader.exports import FORMULA_STARTS, NUMBER, SafeWriter

formula_like = st.builds(lambda start, rest: start + rest, st.sampled_from(FORMULA_STARTS), st.text())


def _round_trip(cells: list[str]) -> list[str]:
    buffer = io.StringIO(newline="")
    SafeWriter(buffer).writerow(cells)
    return next(csv.reader(io.StringIO(buffer.getvalue(), newline="")))


def _is_number(text: str) -> bool:
    return NUMBER.fullmatch(text) is not None


@given(st.lists(st.one_of(st.text(), formula_like), min_size=1, max_size=6))
def test_no_cell_reads_as_a_formula(cells):
    read = _round_trip(cells)
    assert len(read) == len(cells)
    for written, original in zip(read, cells):
        if _is_number(original):
            assert written == original
        elif original.startswith(FORMULA_STARTS):
            assert written == "'" + original, (original, written)
        else:
            assert written == original


def test_the_issue_s_student_id_is_text_and_a_negative_score_a_number():
    assert _round_trip(['=HYPERLINK("x","y")', "@SUM(A1)", "-3", "+1.5", "-x", "-inf", "-1_0"]) == [
        "'=HYPERLINK(\"x\",\"y\")", "'@SUM(A1)", "-3", "+1.5", "'-x", "'-inf", "'-1_0"]
