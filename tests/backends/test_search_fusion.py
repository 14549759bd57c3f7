"""Fusion of the two search sides (pure logic: the sides' lists in, fused scores out)."""

from __future__ import annotations

import pytest

from backends.search import SKU_EXACT, SKU_PREFIX, SearchService, SearchTuning, fuse_scores, rrf


def test_score_fusion_adds_the_text_rank_to_the_cosine() -> None:
    text = [(1, 1.5), (2, 0.25)]  # 1: every word, rank 0.5; 2: some words, rank 0.25
    vector = [(2, 0.9), (3, 0.8)]
    fused = fuse_scores(text, vector, {3: 0.1}, rank_weight=1.0, every_word_bonus=0.02)
    # 1 was not reached by the vector side: it gets the last cosine (0.8).
    assert fused[1] == pytest.approx(0.8 + 0.5 + 0.02)
    assert fused[2] == pytest.approx(0.9 + 0.25)
    # 3 only came from the vector side; its text rank was read with the re-check.
    assert fused[3] == pytest.approx(0.8 + 0.1)
    # The weights matter: no text weight leaves the cosines (and the bonus).
    plain = fuse_scores(text, vector, {3: 0.1}, rank_weight=0.0, every_word_bonus=0.0)
    assert plain == {1: pytest.approx(0.8), 2: pytest.approx(0.9), 3: pytest.approx(0.8)}


def test_sku_matches_count_as_the_best_text_match() -> None:
    fused = fuse_scores([(7, SKU_PREFIX), (8, 1.9)], [(9, 0.5)], {}, rank_weight=1.0, every_word_bonus=0.02)
    assert fused[7] == pytest.approx(0.5 + 1.0 + 0.02)
    assert fused[7] > fused[8]


def _service(**tuning: object) -> SearchService:
    return SearchService(None, None, None, SearchTuning(**tuning))  # type: ignore[arg-type]


@pytest.mark.parametrize("fusion", ["scores", "rrf"])
def test_an_exact_sku_stays_first_whatever_the_vectors_say(fusion: str) -> None:
    service = _service(fusion=fusion)
    hits = service._fuse([(5, 0.1), (6, SKU_EXACT)], [(5, 0.99), (7, 0.98)], {})
    assert [h.material_id for h in hits] == [6, 5, 7]
    # textScore and vectorScore are each side's own: null where a side did not return the hit.
    by_id = {h.material_id: h for h in hits}
    assert by_id[7].text_score is None and by_id[7].vector_score == 0.98
    assert by_id[6].vector_score is None and by_id[6].text_score == SKU_EXACT


def test_rrf_fusion_is_reciprocal_rank() -> None:
    service = _service(fusion="rrf", k=10.0)
    hits = service._fuse([(1, 1.2), (2, 0.4)], [(2, 0.9), (3, 0.8)], {})
    expected = rrf([([(1, 1.2), (2, 0.4)], 1.0), ([(2, 0.9), (3, 0.8)], 1.0)], 10.0)
    assert [h.material_id for h in hits] == [2, 1, 3]
    assert {h.material_id: h.score for h in hits} == pytest.approx(expected)


def test_one_side_alone_keeps_its_order() -> None:
    service = _service()
    assert [h.material_id for h in service._fuse([(4, 0.3), (2, 0.2)], None)] == [4, 2]
    assert [h.material_id for h in service._fuse(None, [(9, 0.7), (1, 0.6)])] == [9, 1]


def test_the_fused_list_makes_the_same_hits_however_it_is_read() -> None:
    service = _service()
    text = [(i, 1.0 + i / 100) for i in range(1, 40)]
    vector = [(i, 0.9 - i / 1000) for i in range(20, 80)]
    hits = service._fuse(text, vector, {i: 0.5 for i in range(40, 80)})
    whole = list(hits)
    assert len(hits) == len(whole) == 79
    assert hits[10:30] == whole[10:30] and hits[-1] == whole[-1] and hits[0] == whole[0]
    # Ties on the fused score go by id; scores never rise down the list.
    scores = [h.score for h in whole]
    assert scores == sorted(scores, reverse=True)
    # A page's depth keeps the first hits of the same list, with the same scores.
    assert list(service._fuse(text, vector, {i: 0.5 for i in range(40, 80)}, 25)) == whole[:25]
    assert list(service._fuse(text, vector, {i: 0.5 for i in range(40, 80)}, 500)) == whole
    by_id = {h.material_id: h for h in whole}
    assert by_id[5].vector_score is None and by_id[5].text_score == pytest.approx(1.05)
    assert by_id[70].text_score is None and by_id[70].vector_score == pytest.approx(0.83)
