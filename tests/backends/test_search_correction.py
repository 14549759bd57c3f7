"""Query rewriting: spelling correction (the edit distance, the choice among candidates, the
vocabulary lookup against real PostgreSQL), units, split and joined words, and the rewrite
reaching both sides of a search."""

from __future__ import annotations

import asyncpg
import pytest

from backends.catalog import MaterialFilterSpec
from backends.postgres import PostgresBackend
from backends.search import (
    SearchService,
    best_correction,
    corrected_query,
    edit_distance,
    normalise_units,
    rewrite_query,
)
from backends.search_index import TextIndexer
from backends.writes import MaterialValues, create_material
from tests.catalog_fixtures import indexed_materials


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
    # "grills" is left alone: the stemmer finds "grill" for it already.
    assert await corrected_query(conn, "Infared  GRILLS") == "infrared grills"
    assert await corrected_query(conn, "ourdoor patio tile") == "outdoor patio tile"
    assert await corrected_query(conn, "цемнт м500") == "цемент м500"
    assert await corrected_query(conn, "гипсокартон 12.5мм") is None  # every word is known
    assert await corrected_query(conn, "bathtub") is None  # nothing close enough
    assert await corrected_query(conn, "12 500") is None  # numbers are never corrected


@pytest.mark.parametrize(("query", "spelt"), [
    ("24 inch range", "24 in range"), ("deck post sleeves 96 inches", "deck post sleeves 96 in"),
    ("4inch junction box", "4 in junction box"), ('3/4" pipe', "3/4 in pipe"), ("10 feet hose", "10 ft hose"),
    ("18v battery", "18 volt battery"), ("dewalt 20 v max", "dewalt 20 volt max"), ("5 gallon bucket", "5 gal bucket"),
    ("1 1/4 pvc tee", "1-1/4 pvc tee"), ("4by4 post", "4 x 4 post"), ("36 x42 pan", "36 x 42 pan"),
    ("50 sq. ft. roll", "50 sq ft roll"), ("foot rest", "foot rest"), ("in line fan", "in line fan"),
    ("цемент м500", "цемент м500"), ("арматура 12мм", "арматура 12мм"),
])
def test_units_are_spelt_as_product_names_spell_them(query: str, spelt: str) -> None:
    assert normalise_units(query) == spelt


async def test_run_together_split_and_rare_words_are_mended_against_the_vocabulary(
        empty_catalog: PostgresBackend, conn: asyncpg.Connection) -> None:
    names = [f"Fire Pit {i}" for i in range(25)] + [f"Pressure Gauge {i}" for i in range(25)] + [
        "ClosetMaid Wire Shelf", "ClosetMaid Shelf Kit", "ClosetMaid Basket", "Guage Set",
        "Range Hood", "Range Hoods Pair", "Outdoor Showerhead", "Chrome Showerhead", "Brass Showerhead",
        "Shower Head Holder", "Цемент М500"]
    for name in names:
        await create_material(empty_catalog, MaterialValues(name=name, unit="шт"))
    await TextIndexer(empty_catalog).rebuild()
    # Two common words run together are searched apart; two words that names hold as one, joined.
    rewrite = await rewrite_query(conn, "outdoor firepit")
    assert rewrite.corrected == "outdoor fire pit" and rewrite.searched == "outdoor fire pit"
    assert (await rewrite_query(conn, "closet maid shelf")).searched == "closetmaid shelf"
    assert (await rewrite_query(conn, "chrome shower head")).searched == "chrome showerhead"
    # A word in one name only, one edit from a word in 25: a misspelling too.
    assert (await rewrite_query(conn, "guage")).corrected == "gauge"
    # An inflection of a known word is no misspelling: the stemmer matches it.
    assert (await rewrite_query(conn, "range hoods")).corrected is None
    # Units are searched as names write them, but not shown as a correction.
    rewrite = await rewrite_query(conn, "24 inch range hood")
    assert rewrite.corrected is None and rewrite.searched == "24 in range hood"
    rewrite = await rewrite_query(conn, "цемент м500")
    assert rewrite.corrected is None and rewrite.searched is None


async def test_the_vector_side_scores_its_hits_text_for_the_rewritten_query_too(
        empty_catalog: PostgresBackend) -> None:
    ids, embedder, index = await indexed_materials(
        empty_catalog, ["Chrome Showerhead", "Brass Showerhead", "Outdoor Showerhead", "Chrome Towel Bar"])
    service = SearchService(empty_catalog, embedder, index)
    spec = MaterialFilterSpec()
    rewrite = await service.rewrite("chrome shower head")
    assert rewrite.searched == "chrome showerhead"
    _, as_written = await service.vector_side("chrome shower head", spec, 10)
    _, rewritten = await service.vector_side("chrome shower head", spec, 10, rewrite)
    # Every word of the rewrite is in the name: the text side's score of an every-word match (>= 1).
    assert as_written[ids["Chrome Showerhead"]] < 1.0 <= rewritten[ids["Chrome Showerhead"]]
    assert rewritten[ids["Chrome Towel Bar"]] < 1.0
    outcome = await service.search("chrome shower head", spec, "HYBRID", count=False)
    assert outcome.hits[0].material_id == ids["Chrome Showerhead"] and outcome.corrected == "chrome showerhead"
    await index.close()
