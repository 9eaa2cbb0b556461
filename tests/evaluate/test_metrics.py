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


# --- streamed retrieval: equal to the whole-matrix code, block size aside -----------------

def whole_matrix_positions(sim, relevant):
    """The whole-matrix positions as freebind computed them before streaming (reference)."""
    s = np.asarray(sim, dtype=float)
    rel = np.asarray(relevant).astype(np.int64)
    valid = rel >= 0
    rows = np.arange(s.shape[0])
    scores = s[rows[:, None], np.where(valid, rel, 0)]
    out = np.full(rel.shape, np.inf)
    for j in range(rel.shape[1]):
        sj = scores[:, j][:, None]
        ge_all = (s >= sj).sum(axis=1)
        ge_relevant = ((scores >= sj) & valid).sum(axis=1)
        gt_relevant = ((scores > sj) & valid).sum(axis=1)
        tied_before = ((scores[:, :j] == sj) & valid[:, :j]).sum(axis=1)
        pos = (ge_all - ge_relevant + gt_relevant + tied_before).astype(float)
        out[:, j] = np.where(valid[:, j], pos, np.inf)
    return out


def whole_matrix_paired(sim, owner, ks=(1, 5, 10), map_k=10, caption="text", item="audio"):
    from freebind.evaluate.metrics.retrieval import _item_captions

    owner = np.asarray(owner)
    c, i = caption[0], item[0]
    out = {}
    for name, pos in ((f"{c}2{i}", whole_matrix_positions(sim, owner[:, None])),
                      (f"{i}2{c}", whole_matrix_positions(
                          np.asarray(sim).T, _item_captions(owner, np.shape(sim)[1])))):
        for k in ks:
            out[f"{name}_R@{k}"] = recall_at_k(pos, k)
        out[f"{name}_mAP@{map_k}"] = average_precision_at_k(pos, map_k)
    return out


def tied_world(seed, n_items=9, dim=8):
    """Captions and items whose rows have four entries ±0.5 (exactly unit length): every
    cosine is a multiple of 1/4, exact in any summation order, and ties abound."""
    rng = np.random.default_rng(seed)

    def rows(n):
        x = np.zeros((n, dim), dtype=np.float32)
        for r in range(n):
            x[r, rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
        return x

    owner = np.repeat(np.arange(n_items), rng.integers(1, 4, n_items))
    return rows(len(owner)), rows(n_items), owner


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_streamed_positions_equal_the_whole_matrix(block):
    rng = np.random.default_rng(block)
    for sim in (rng.integers(0, 3, size=(37, 11)).astype(float),      # many ties
                rng.standard_normal((23, 41))):
        rel = np.where(rng.random((sim.shape[0], 3)) < 0.4, -1,
                       np.argsort(rng.random((sim.shape[0], sim.shape[1])), axis=1)[:, :3])
        rel[:, 0] = rng.integers(0, sim.shape[1], sim.shape[0])
        rel[:, 1:][rel[:, 1:] == rel[:, :1]] = -1
        got = relevant_positions(sim, rel, block_rows=block)
        assert np.array_equal(got, whole_matrix_positions(sim, rel))


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1000])
def test_streamed_paired_metrics_equal_the_whole_matrix(block):
    from freebind.evaluate.metrics import paired_retrieval_from_embeddings

    for seed in range(4):
        cap, items, owner = tied_world(seed)
        sim = cap @ items.T
        want = whole_matrix_paired(sim, owner)
        assert paired_retrieval_metrics(sim, owner, block_rows=block) == want
        assert paired_retrieval_from_embeddings(cap, items, owner, block_rows=block) == want


def test_streamed_metrics_equal_on_random_embeddings_from_memory_maps(tmp_path):
    from freebind.evaluate.metrics import (
        paired_retrieval_from_embeddings, retrieval_from_embeddings,
    )

    rng = np.random.default_rng(7)
    owner = np.repeat(np.arange(60), 5)
    items = rng.standard_normal((60, 32)).astype(np.float32)
    cap = items[owner] + rng.standard_normal((300, 32)).astype(np.float32) * 3
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(cap) @ unit(items).T
    want = whole_matrix_paired(sim, owner)
    assert 0.05 < want["t2a_R@1"] < 0.95 and 0.05 < want["a2t_R@1"] < 0.95
    mm = {}
    for name, x in (("cap", cap), ("items", items)):
        m = np.lib.format.open_memmap(tmp_path / f"{name}.npy", "w+", np.float32, x.shape)
        m[:] = x
        m.flush()
        mm[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    for block in (4, 17, 512):
        got = paired_retrieval_from_embeddings(mm["cap"], mm["items"], owner, block_rows=block)
        assert got == want
    # one direction with several relevant rows per query: item -> its captions
    from freebind.evaluate.metrics.retrieval import _item_captions

    table = _item_captions(owner, 60)
    got = retrieval_from_embeddings(mm["items"], mm["cap"], table, ks=(1, 5, 10),
                                    block_rows=9, name="a2t")
    assert got == {k: v for k, v in want.items() if k.startswith("a2t")}
    got = retrieval_from_embeddings(cap, items, owner, block_rows=13)
    assert got == {k[4:]: v for k, v in want.items() if k.startswith("t2a")}


def test_streamed_metrics_read_store_views(tmp_path):
    from freebind.evaluate.metrics import paired_retrieval_from_embeddings
    from freebind.data.store import EmbeddingStore, text_key

    class S:
        name, fingerprint, dim, modalities = "s", "s-v1", 8, ("text", "audio")

    cap, items, owner = tied_world(11, n_items=20)
    store = EmbeddingStore(tmp_path, shard_size=7)
    views = {}
    for m, x in (("text", cap), ("audio", items)):
        keys = [text_key(f"{m}{i}") for i in range(len(x))]
        store.write(S(), m, keys, x)
        views[m] = store.view(S(), m, keys)
    want = whole_matrix_paired(cap @ items.T, owner)
    assert paired_retrieval_from_embeddings(views["text"], views["audio"], owner,
                                            block_rows=6) == want


def test_streamed_metrics_never_hold_the_matrix(tmp_path):
    import tracemalloc

    from freebind.evaluate.metrics import paired_retrieval_from_embeddings

    rng = np.random.default_rng(3)
    n, d = 3000, 16
    path = tmp_path / "x.npy"
    m = np.lib.format.open_memmap(path, "w+", np.float32, (n, d))
    m[:] = rng.standard_normal((n, d)).astype(np.float32)
    m.flush()
    x = np.load(path, mmap_mode="r")
    tracemalloc.start()
    paired_retrieval_from_embeddings(x, x, np.arange(n), block_rows=200)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the whole matrix would be n*n*4 = 36 MB; a 200-row block is 160 KB
    assert peak < 3 << 20


def test_block_rows_follow_the_budget():
    from freebind.evaluate.metrics import block_rows_for

    for dim in (16, 512, 1024):
        for budget in (1 << 20, 64 << 20, 1 << 30):
            b = block_rows_for(dim, budget)
            assert 5 * b * b + 16 * b * dim <= budget
            assert 5 * (b + 2) ** 2 + 16 * (b + 2) * dim > budget or b == 16
    assert block_rows_for(1024) == block_rows_for(1024, 256 << 20)
    with pytest.raises(MetricInputError, match="budget"):
        block_rows_for(8, 0)


def test_streamed_metrics_reject_bad_embeddings():
    from freebind.evaluate.metrics import paired_retrieval_from_embeddings

    x = np.ones((4, 3), dtype=np.float32)
    y = x.copy()
    y[2, 1] = np.nan
    with pytest.raises(MetricInputError, match="audio embeddings: row 2"):
        paired_retrieval_from_embeddings(x, y, [0, 1, 2, 3], block_rows=2)
    with pytest.raises(MetricInputError, match="dimension mismatch"):
        paired_retrieval_from_embeddings(x, np.ones((4, 5)), [0, 1, 2, 3])
    with pytest.raises(MetricInputError, match="caption_item"):
        paired_retrieval_from_embeddings(x, x, [0, 1])


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


# --- streamed classification: equal to the whole logits matrix ---------------------------

def _unit_rows(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("block", [1, 3, 50])
def test_streamed_zero_shot_equals_the_whole_logits(block):
    from freebind.evaluate.metrics.classification import zero_shot_from_embeddings

    cap, items, _ = tied_world(5, n_items=6)           # exact cosines, many ties
    weights = items.astype(np.float64)                 # 6 unit "class embeddings"
    labels = np.arange(len(cap)) % 6
    logits = _unit_rows(cap) @ weights.T
    want = topk_accuracy(logits, labels, (1, 5))
    want["mean_per_class_recall"] = mean_per_class_recall(logits, labels)
    assert zero_shot_from_embeddings(cap, weights, labels, (1, 5), block_rows=block) == want


def test_streamed_multilabel_map_equals_the_whole_scores():
    from freebind.evaluate.metrics.multilabel import map_from_embeddings

    rng = np.random.default_rng(2)
    items = rng.standard_normal((40, 8)).astype(np.float32)
    weights = _unit_rows(rng.standard_normal((7, 8))).astype(np.float64)
    targets = (rng.random((40, 7)) < 0.3).astype(int)
    targets[:, 3] = 0                                   # a class without positives
    want = mean_average_precision(_unit_rows(items) @ weights.T, targets)
    for block, budget in ((None, None), (3, 16 * 40 * 2), (7, 1)):   # 2 classes, 1 class
        got = map_from_embeddings(items, weights, targets, block, budget)
        assert got[0] == want[0] and got[2] == want[2] == 1
        np.testing.assert_array_equal(got[1], want[1])
