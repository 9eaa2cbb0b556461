"""A LanceDB embedding function registered as ``freebind``: a table whose source column holds
texts, audio paths or image paths is embedded with a space or a fused bundle (a preset, or
factors) when rows are added, and queries are embedded the same way::

    import lancedb
    import freebind.run.lance_function          # registers "freebind"
    from lancedb.embeddings import get_registry
    from lancedb.pydantic import LanceModel, Vector

    fb = get_registry().get("freebind").create(target="fused.safetensors", preset="versatile")

    class Clip(LanceModel):
        path: str = fb.SourceField()
        vector: Vector(fb.ndims()) = fb.VectorField()

    table = lancedb.connect("db").create_table("clips", schema=Clip)
    table.add([{"path": "dog.wav"}, {"path": "rain.wav"}])
    table.search("a dog barking").limit(5).to_list()

A value's modality is ``modality`` when given, else told by its extension when it names an
existing file (audio, image, video), else it is a text.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from freebind.util.errors import UsageError
from freebind.util.optional import require

require("lancedb", "the LanceDB embedding function", install="'freebind[lancedb]'")

from lancedb.embeddings import EmbeddingFunction, register  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402


def _modality(value: str, given: str | None) -> str:
    if given:
        return given
    from freebind.util.vocab import modality_of

    if len(value) < 4096 and os.path.isfile(value):
        m = modality_of(value)
        if m in ("audio", "image", "video"):
            return m
    return "text"


@register("freebind")
class FreebindEmbeddings(EmbeddingFunction):
    """``target``: a space reference or a bundle (``fused.safetensors``, ``…@preset``);
    ``preset``/``factors``: the bundle's factor view; ``modality``: the source column's
    modality (default: told per value); ``device``: where the encoders run."""

    target: str
    preset: Optional[str] = None
    factors: list[str] = []
    modality: Optional[str] = None
    device: Optional[str] = None
    batch_size: int = 32
    _target: Any = PrivateAttr(default=None)

    def _resolved(self):
        if self._target is None:
            from freebind.run.targets import open as open_target

            options = {"device": self.device} if self.device else {}
            self._target = open_target(self.target, self.factors or None, self.preset,
                                       space_options=options)
        return self._target

    def ndims(self) -> int:
        return int(self._resolved().dim)

    def _embed(self, values) -> list[np.ndarray]:
        values = self._values(values)
        tgt = self._resolved()
        out: list = [None] * len(values)
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(values):
            groups.setdefault(_modality(str(v), self.modality), []).append(i)
        for m, idx in groups.items():
            if m not in tgt.modalities:
                raise UsageError(f"{tgt.name} has no {m} modality (value "
                                 f"{str(values[idx[0]])[:60]!r})")
            rows = tgt.encode(m, [str(values[i]) for i in idx], batch_size=self.batch_size)
            rows = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
            for i, r in zip(idx, rows):
                out[i] = np.asarray(r, dtype=np.float32)
        return out

    @staticmethod
    def _values(values) -> list:
        if isinstance(values, (str, bytes)):
            return [values]
        if hasattr(values, "combine_chunks"):
            values = values.combine_chunks()
        if hasattr(values, "to_pylist"):
            return values.to_pylist()
        return list(values)

    def compute_query_embeddings(self, query, *args, **kwargs) -> list[np.ndarray]:
        return self._embed(query)

    def compute_source_embeddings(self, source, *args, **kwargs) -> list[np.ndarray]:
        return self._embed(source)
