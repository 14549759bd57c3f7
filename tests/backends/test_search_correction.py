"""Query spelling correction: the edit distance, the choice among candidates, and the
vocabulary lookup against real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from backends.postgres import PostgresBackend
from backends.search import best_correction, corrected_query, edit_distance
from backends.search_index import TextIndexer
from backends.writes import MaterialValues, create_material


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("infared", "infrared", 1), ("ourdoor", "outdoor", 1),
    ("teh", "the", 1), ("incyh", "inch", 1), ("цемнт", "цемент", 1), ("kitten", "sitting", 3),
    ("abcdef", "badcfe", 3),
])
def test_edit_distance_counts_a_transposition_as_one_edit(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_the_closest_then_most_common_candidate_wins() -> None:
    # "inc" is two edits from "incyh" and "inch" one: fewer edits beat frequency.
    assert best_correction("incyh", [("inc", 900), ("inch", 21), ("inca", 2)]) == "inch"
    # Equally close: the more common word.
    assert best_correction("gril", [("grit", 3), ("grill", 40)]) == "grill"
    # Short words allow one edit only; longer ones two.
    assert best_correction("bolt", [("belts", 10)]) is None
    assert best_correction("insallaton", [("installation", 5)]) == "installation"
    # The word itself is no correction.
    assert best_correction("grill", [("grill", 40)]) is None


async def test_misspelt_words_are_corrected_against_the_catalogs_names(
        empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    for name in ("Infrared Gas Grill", "Outdoor Patio Tile", "Цемент М500", "Цемент М400", "Гипсокартон 12.5мм"):
        await create_material(empty_catalog, MaterialValues(name=name, unit="шт"))
    await TextIndexer(empty_catalog).rebuild()
    assert await corrected_query(conn, "Infared  GRILLS") == "infrared grill"
    assert await corrected_query(conn, "ourdoor patio tile") == "outdoor patio tile"
    assert await corrected_query(conn, "цемнт м500") == "цемент м500"
    assert await corrected_query(conn, "гипсокартон 12.5мм") is None  # every word is known
    assert await corrected_query(conn, "bathtub") is None  # nothing close enough
    assert await corrected_query(conn, "12 500") is None  # numbers are never corrected
