"""Metrics on crafted similarity matrices with hand-computed answers, ties included."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freebind.evaluate.metrics import (
    MetricInputError,
    average_precision,
    average_precision_at_k,
    class_embeddings,
    mean_average_precision,
    paired_retrieval_metrics,
    recall_at_k,
    relevant_positions,
    topk_accuracy,
    zero_shot_metrics,
)
from freebind.evaluate.metrics.classification import mean_per_class_recall


# --- retrieval -------------------------------------------------------------------------

def test_five_caption_rule_known_answer():
    # 2 items (audio clips), 6 captions: captions 0-2 belong to item 0, 3-5 to item 1.
    sim = np.array([
        [0.9, 0.1],   # c0 -> a0 at rank 0
        [0.2, 0.8],   # c1 -> a0 at rank 1
        [0.3, 0.4],   # c2 -> a0 at rank 1
        [0.1, 0.7],   # c3 -> a1 at rank 0
        [0.6, 0.5],   # c4 -> a1 at rank 1
        [0.0, 0.95],  # c5 -> a1 at rank 0
    ])
    owner = [0, 0, 0, 1, 1, 1]
    m = paired_retrieval_metrics(sim, owner, caption="text", item="audio", ks=(1, 2))
    assert m["t2a_R@1"] == pytest.approx(3 / 6)
    assert m["t2a_R@2"] == pytest.approx(1.0)
    # t2a mAP@10 = mean reciprocal rank = (1 + 1/2 + 1/2 + 1 + 1/2 + 1) / 6
    assert m["t2a_mAP@10"] == pytest.approx(4.5 / 6)
    # a2t, audio 0: scores over captions [0.9,0.2,0.3,0.1,0.6,0.0] -> ranking c0,c4,c2,c1,...
    # best own caption c0 at position 0 -> hit@1. AP@10: relevant at positions 0,2,3 ->
    # (1/1 + 2/3 + 3/4) / 3
    # audio 1: [0.1,0.8,0.4,0.7,0.5,0.95] -> c5,c1,c3,c4,c2,c0: own at 0,2,3 -> same AP
    assert m["a2t_R@1"] == 1.0
    ap = (1 + 2 / 3 + 3 / 4) / 3
    assert m["a2t_mAP@10"] == pytest.approx(ap)


def test_item_query_hits_when_any_caption_within_k():
    # item 0's captions are ranked 3rd and 5th; item 1's caption is ranked 1st.
    sim_t2a = np.array([[0.5, 0.0], [0.1, 0.0], [0.9, 0.0], [0.7, 0.0], [0.0, 1.0]])
    owner = [0, 0, 1, 1, 1]
    # audio 0 ranks captions: c2 (0.9), c3 (0.7), c0 (0.5), c1 (0.1), c4 (0.0)
    m = paired_retrieval_metrics(sim_t2a, owner, ks=(1, 2, 3))
    # audio 1 ranks c4 first -> hit@1; audio 0 first own caption at position 2
    assert m["a2t_R@1"] == 0.5
    assert m["a2t_R@2"] == 0.5
    assert m["a2t_R@3"] == 1.0


def test_ties_are_pessimistic():
    # every score equal: the correct item is ranked after every wrong one
    sim = np.zeros((4, 4))
    m = paired_retrieval_metrics(sim, [0, 1, 2, 3], caption="image", item="audio", ks=(1, 3, 4))
    assert m["i2a_R@1"] == 0.0 and m["i2a_R@3"] == 0.0 and m["i2a_R@4"] == 1.0
    assert m["a2i_R@1"] == 0.0 and m["a2i_R@4"] == 1.0
    assert m["i2a_mAP@10"] == pytest.approx(0.25)
    # a tie between the correct item and one wrong item costs one position
    pos = relevant_positions(np.array([[0.5, 0.5, 0.1]]), np.array([[1]]))
    assert pos[0, 0] == 1
    pos = relevant_positions(np.array([[0.5, 0.5, 0.1]]), np.array([[0]]))
    assert pos[0, 0] == 1


def test_ties_among_relevant_candidates_do_not_cost():
    # two relevant candidates tied with each other at the top: positions 0 and 1
    pos = relevant_positions(np.array([[0.7, 0.7, 0.2]]), np.array([[0, 1]]))
    assert sorted(pos[0].tolist()) == [0.0, 1.0]
    assert average_precision_at_k(pos, 10) == 1.0
    # tied with a wrong one as well: wrong one first, then the two relevant
    pos = relevant_positions(np.array([[0.7, 0.7, 0.7]]), np.array([[0, 1]]))
    assert sorted(pos[0].tolist()) == [1.0, 2.0]
    assert average_precision_at_k(pos, 10) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_map_at_k_cutoff_and_padding():
    pos = np.array([[0.0, 11.0, np.inf], [12.0, np.inf, np.inf]])
    # query 0: 2 relevant, one at position 0 within 10 -> (1/1)/min(2,10)=0.5; query 1: 0
    assert average_precision_at_k(pos, 10) == pytest.approx(0.25)
    assert recall_at_k(pos, 1) == 0.5
    assert recall_at_k(pos, 13) == 1.0


def brute_positions(row, relevant):
    """Pessimistic order by explicit sort: score desc, wrong before right, then list order."""
    rel = [r for r in relevant if r >= 0]
    key = {c: (-row[c], 1 if c in rel else 0, rel.index(c) if c in rel else 0)
           for c in range(len(row))}
    order = sorted(range(len(row)), key=lambda c: key[c])
    return sorted(order.index(r) for r in rel)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_positions_match_an_explicit_sort(data):
    n_items = data.draw(st.integers(1, 6))
    per = data.draw(st.lists(st.integers(1, 3), min_size=n_items, max_size=n_items))
    owner = np.repeat(np.arange(n_items), per)
    n_cap = len(owner)
    values = data.draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]),
                                min_size=n_cap * n_items, max_size=n_cap * n_items))
    sim = np.array(values).reshape(n_cap, n_items)
    pos = relevant_positions(sim, owner[:, None])
    for c in range(n_cap):
        assert pos[c, 0] == brute_positions(sim[c], [owner[c]])[0]
    sim_t = sim.T
    for a in range(n_items):
        caps = list(np.nonzero(owner == a)[0])
        width = max(per)
        rel = np.array(caps + [-1] * (width - len(caps)))[None, :]
        got = relevant_positions(sim_t[a:a + 1], rel)[0]
        assert sorted(got[np.isfinite(got)].tolist()) == brute_positions(sim_t[a], caps)


def test_retrieval_rejects_bad_input():
    with pytest.raises(MetricInputError, match="NaN"):
        paired_retrieval_metrics(np.array([[np.nan]]), [0])
    with pytest.raises(MetricInputError, match="caption_item"):
        paired_retrieval_metrics(np.zeros((2, 2)), [0])
    with pytest.raises(MetricInputError, match="no caption"):
        paired_retrieval_metrics(np.zeros((2, 2)), [0, 0])
    with pytest.raises(MetricInputError, match="twice"):
        relevant_positions(np.zeros((1, 3)), np.array([[1, 1]]))


def test_chunked_positions_equal_unchunked(monkeypatch):
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 3, size=(37, 11)).astype(float)
    rel = rng.integers(0, 11, size=(37, 1))
    full = relevant_positions(sim, rel)
    import freebind.evaluate.metrics.retrieval as r
    monkeypatch.setattr(r, "_CHUNK_CELLS", 20)
    assert np.array_equal(relevant_positions(sim, rel), full)


# --- zero-shot classification ------------------------------------------------------------

def test_class_embeddings_average_normalised_templates():
    t = np.array([[[2.0, 0.0], [0.0, 1.0]],     # class 0: templates along x and y
                  [[0.0, -3.0], [0.0, -1.0]]])  # class 1: both along -y
    w = class_embeddings(t)
    assert np.allclose(w[0], [np.sqrt(0.5), np.sqrt(0.5)])
    assert np.allclose(w[1], [0.0, -1.0])


def test_topk_accuracy_known_answer_with_ties():
    logits = np.array([
        [0.9, 0.1, 0.0],  # true 0: rank 0
        [0.5, 0.5, 0.0],  # true 1: tied with class 0 -> rank 1 (pessimistic)
        [0.3, 0.2, 0.1],  # true 2: rank 2
        [0.0, 0.0, 0.0],  # true 0: all tied -> rank 2
    ])
    labels = [0, 1, 2, 0]
    acc = topk_accuracy(logits, labels, ks=(1, 2, 3, 5))
    assert acc == {"acc1": 0.25, "acc2": 0.5, "acc3": 1.0}  # acc5 skipped: only 3 classes
    assert mean_per_class_recall(logits, labels) == pytest.approx((0.5 + 0 + 0) / 3)


def test_zero_shot_metrics_end_to_end():
    # 3 classes on the axes of R^3, two templates each; items near their class axis
    eye = np.eye(3)
    templates = np.stack([eye, eye * 2.0], axis=1)          # [3, 2, 3]
    items = np.array([[1, 0.1, 0], [0.2, 1, 0], [0, 0.9, 0.8], [0, 0, 1]], dtype=float)
    m = zero_shot_metrics(items, templates, [0, 1, 2, 2], ks=(1, 2))
    assert m["acc1"] == 0.75 and m["acc2"] == 1.0
    with pytest.raises(MetricInputError, match="dimension"):
        zero_shot_metrics(items[:, :2], templates, [0, 1, 2, 2])


# --- multi-label mAP -----------------------------------------------------------------------

def test_average_precision_known_answer():
    # ranking: + - + -  -> AP = (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.1, 0.2], [0, 1]) == 1.0


def test_average_precision_ties_form_one_threshold():
    # all tied: one threshold with precision 2/4 at recall 1 -> AP 0.5 whatever the order
    assert average_precision([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    assert average_precision([0.5] * 4, [0, 0, 1, 1]) == pytest.approx(0.5)
    # positive tied with a negative at the top: precision 1/2 at recall 1/2, then 2/3
    ap = average_precision([0.9, 0.9, 0.5, 0.1], [1, 0, 1, 0])
    assert ap == pytest.approx(0.5 * 0.5 + 0.5 * (2 / 3))


def test_mean_average_precision_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.4, 0.3, 0.2]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    m, per, skipped = mean_average_precision(scores, targets)
    assert skipped == 1 and np.isnan(per[2])
    assert per[0] == 1.0                                  # class 0: + (0.9), + (0.4), - (0.2)
    assert per[1] == pytest.approx(1.0)                   # class 1: + (0.8), + (0.3), - (0.1)
    assert m == 1.0
    targets2 = np.array([[0, 0, 1], [1, 1, 0], [1, 0, 0]])
    m2, per2, _ = mean_average_precision(scores, targets2)
    # class 0 ranking: 0.9(-) 0.4(+) 0.2(+) -> (1/2 + 2/3)/2 ; class 1: 0.8(+) -> 1 ;
    # class 2: 0.3(+) -> 1
    assert per2[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m2 == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 + 1) / 3)
    with pytest.raises(MetricInputError, match="0/1"):
        average_precision([0.1, 0.2], [0, 2])
    with pytest.raises(MetricInputError, match="no positive"):
        average_precision([0.1, 0.2], [0, 0])
