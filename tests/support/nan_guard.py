"""The non-finite output guard, checked the same way for every family: the encoder's output
for one chosen item gets a NaN (or an infinity), then ``encode`` must refuse the call with one
line naming the space, the modality and that item, and the embedding store must skip exactly
that item under ``on_error="skip"`` (writing nothing for it) and stop under ``"raise"``."""

from __future__ import annotations

import numpy as np
import pytest


def poison(monkeypatch, space, bad_item, value=float("nan"), method: str | None = None):
    """Make ``space``'s encoder emit ``value`` in the row of ``bad_item``.

    ``method`` is the hook whose output rows follow the items of an ``encode`` call in order:
    ``forward(modality, inputs)`` for the real adapters, ``_run(modality, items, ...)`` for
    the mini spaces. ``encode`` is wrapped only to know the items of the current call."""
    method = method or ("forward" if hasattr(space, "forward") else "_run")
    inner, outer = getattr(space, method), space.encode
    state = {"items": [], "pos": 0}

    def encode(modality, items, *args, **kwargs):
        state["items"], state["pos"] = list(items), 0
        return outer(modality, items, *args, **kwargs)

    def hooked(modality, *args, **kwargs):
        out = inner(modality, *args, **kwargs)
        rows = [j for j in range(len(out))
                if state["pos"] + j < len(state["items"])
                and state["items"][state["pos"] + j] == bad_item]
        state["pos"] += len(out)
        if rows:
            out = out.clone()
            out[rows, 0] = value
        return out

    monkeypatch.setattr(space, method, hooked)
    monkeypatch.setattr(space, "encode", encode)


def assert_guarded(monkeypatch, space, modality: str, items, bad: int, tmp_path,
                   label: str | None = None, method: str | None = None,
                   value=float("nan")) -> None:
    """The whole contract for one space and modality; ``items[bad]`` is the poisoned item.
    Ends with ``monkeypatch.undo()`` (the space is shared by its module's other tests)."""
    from freebind.spaces.guard import NonFiniteEmbedding
    from freebind.data.store import EmbeddingStore

    items = list(items)
    clean = space.encode(modality, items)  # finite before the injection
    assert np.isfinite(np.asarray(clean)).all()
    poison(monkeypatch, space, items[bad], value=value, method=method)
    with pytest.raises(NonFiniteEmbedding) as err:
        space.encode(modality, items)
    msg = str(err.value)
    assert "\n" not in msg and space.name in msg and modality in msg, msg
    assert (label or str(items[bad])) in msg and f"item {bad}" in msg, msg

    store = EmbeddingStore(tmp_path / f"store-{modality}")
    out, kept, failures = store.embed(space, modality, items, batch_size=len(items),
                                      progress=False, on_error="skip")
    assert kept.tolist() == [i for i in range(len(items)) if i != bad]
    assert [f.index for f in failures] == [bad] and "non-finite" in failures[0].reason
    assert np.isfinite(out).all() and out.shape == (len(items) - 1, space.dim)
    np.testing.assert_allclose(out, np.asarray(clean)[kept], atol=1e-5)
    assert store.encoded == len(items) - 1  # nothing written for the poisoned item
    with pytest.raises(NonFiniteEmbedding, match="non-finite"):
        EmbeddingStore(tmp_path / f"strict-{modality}").embed(
            space, modality, items, batch_size=len(items), progress=False)
    monkeypatch.undo()
    again = store.embed(space, modality, items, progress=False)  # only the skipped one is new
    assert store.encoded == len(items) and np.isfinite(again).all()
