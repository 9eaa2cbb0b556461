"""Embed files and texts with a space or a fused bundle into partitions that embedding tools
read (the clip-retrieval / embedding-reader layout)::

    OUT/<modality>_emb/<modality>_emb_<k>.npy     float32 [rows, dim] (float16 with fp16)
    OUT/metadata/metadata_<k>.parquet             path, modality, row — in row order
    OUT/skipped/skipped_<k>.jsonl                  items of partition k that were skipped
    OUT/embed.json                                 the run: target, factors, partitions, report

The unit of work is a :class:`Shard`: the items of one modality that make partition ``k``
(numbers run across modalities, so ``metadata_<k>`` describes exactly the rows of the one
``*_emb_<k>.npy``). :func:`plan_embed` turns the inputs into an :class:`EmbedPlan` (the
target, the options, the output folder and the shards; deterministic, JSON-serialisable so
a remote worker can rebuild it); :func:`run_shard` encodes one shard through the embedding
store and writes its partition atomically and idempotently (:func:`write_shard` is the
write half alone, for an engine that computed the rows elsewhere); :func:`finish` writes
the report. :func:`embed` does all of it in process (the ``"local"`` engine); other
engines register with :func:`register_engine`. See docs/architecture.md
("Interfaces", "Embedding shards").

Re-running the same call resumes: finished partitions are kept, cached base embeddings
reused, so a killed run recomputes at most one store shard. Unreadable, truncated or
mislabelled files are reported (path and reason) and skipped.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from freebind.data.items import StringArray, StringArrayBuilder
from freebind.run.embed_folder import MANIFEST, line_source, partition_paths
from freebind.util.atomic import atomic_write
from freebind.util.callable_module import make_callable
from freebind.util.errors import UsageError
from freebind.util.vocab import ALL_MODALITIES
from freebind.util.text import reason

#: output order of the modalities (and of the partition numbers)
MODALITY_ORDER = ALL_MODALITIES
METADATA_FORMATS = ("parquet", "jsonl")
#: how many paths of files left out for an unknown extension a report lists
IGNORED_EXAMPLES = 5


# --- the plan -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """The items of one modality that make partition ``index``.

    ``items`` are file paths or texts (what the encoders read); ``sources`` say where each
    came from (the path, or ``FILE:LINE`` for a line of a texts file) and become the
    metadata's ``path`` column; both are held packed
    (:class:`~freebind.data.items.StringArray`: a plan over millions of inputs holds no
    Python object per input); ``failed`` are ``(source, reason)`` pairs of inputs that
    failed before encoding (a text file that cannot be read); ``digest`` identifies the
    shard's inputs in the manifest."""

    index: int
    modality: str
    items: Sequence[str]
    sources: Sequence[str] = ()
    failed: tuple[tuple[str, str], ...] = ()
    digest: str = ""

    def __post_init__(self):
        items = StringArray.pack(self.items)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "sources",
                           StringArray.pack(self.sources) if len(self.sources) else items)
        if len(self.sources) != len(self.items):
            raise ValueError("a shard needs one source per item")

    def to_dict(self) -> dict:
        return {"index": self.index, "modality": self.modality, "items": list(self.items),
                "sources": list(self.sources), "failed": [list(f) for f in self.failed],
                "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Shard":
        return cls(int(d["index"]), str(d["modality"]), list(d["items"]),
                   list(d.get("sources") or d["items"]),
                   tuple((str(s), str(r)) for s, r in d.get("failed", ())),
                   str(d.get("digest", "")))


@dataclass(frozen=True)
class EmbedOptions:
    """What a run is, beyond its target and inputs (see :func:`plan_embed`)."""

    factors: tuple[str, ...] = ()
    preset: str | None = None
    fp16: bool = False
    as_modality: str | None = None
    space_options: Mapping[str, Any] = field(default_factory=dict)
    partition_size: int = 100_000
    batch_size: int = 64
    shard_size: int = 2048
    cache_dir: str | None = None
    metadata: str = "parquet"
    strict: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["factors"] = list(self.factors)
        d["space_options"] = dict(self.space_options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "EmbedOptions":
        d = dict(d)
        d["factors"] = tuple(d.get("factors", ()))
        d["space_options"] = dict(d.get("space_options") or {})
        return cls(**d)


@dataclass
class EmbedPlan:
    """Target reference, options, output folder and shards of one run, with the target's
    identity (name, dim, fingerprint) and the inputs skipped while planning."""

    target: str
    output: str
    options: EmbedOptions
    shards: tuple[Shard, ...]
    name: str = ""
    dim: int = 0
    fingerprint: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)   # inputs found per modality
    skipped: tuple[Mapping[str, str], ...] = ()               # skipped while planning
    #: files left out for an unknown extension: how many, and the first few
    ignored: int = 0
    ignored_examples: tuple[str, ...] = ()
    _target: Any = field(default=None, repr=False, compare=False)

    @property
    def dtype(self) -> str:
        return "float16" if self.options.fp16 else "float32"

    def manifest(self) -> dict:
        """The part of embed.json that identifies the run (a rerun must match it)."""
        return {"target": self.name, "fingerprint": self.fingerprint, "dim": self.dim,
                "dtype": self.dtype, "metadata": self.options.metadata,
                "partitions": [{"k": s.index, "modality": s.modality,
                                "items": len(s.items) + len(s.failed), "sources": s.digest}
                               for s in self.shards]}

    def to_dict(self) -> dict:
        return {"target": self.target, "output": self.output,
                "options": self.options.to_dict(), "name": self.name, "dim": self.dim,
                "fingerprint": self.fingerprint, "counts": dict(self.counts),
                "skipped": [dict(s) for s in self.skipped],
                "ignored": self.ignored, "ignored_examples": list(self.ignored_examples),
                "shards": [s.to_dict() for s in self.shards]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "EmbedPlan":
        return cls(str(d["target"]), str(d["output"]), EmbedOptions.from_dict(d["options"]),
                   tuple(Shard.from_dict(s) for s in d["shards"]), str(d.get("name", "")),
                   int(d.get("dim", 0)), str(d.get("fingerprint", "")),
                   dict(d.get("counts", {})), tuple(dict(s) for s in d.get("skipped", ())),
                   int(d.get("ignored", 0)), tuple(d.get("ignored_examples", ())))

    def open_target(self):
        """The resolved target (:func:`freebind.open`), loaded once per plan object."""
        if self._target is None:
            from freebind.run.targets import open as open_target

            tgt = open_target(self.target, self.options.factors, self.options.preset,
                              space_options=self.options.space_options)
            if self.fingerprint and tgt.fingerprint != self.fingerprint:
                raise UsageError(f"{self.target}: resolves to fingerprint {tgt.fingerprint} "
                                 f"here, but the plan was made for {self.fingerprint}")
            self._target = tgt
        return self._target

    def open_store(self):
        from freebind.data.store import EmbeddingStore

        return EmbeddingStore(self.options.cache_dir, shard_size=self.options.shard_size)


class _Entries:
    """One modality's inputs as :func:`_collect` gathers them: sources and items packed a
    block at a time (:class:`~freebind.data.items.StringArrayBuilder`), and the inputs that
    failed before encoding, ``{index: error}`` (their item is empty)."""

    def __init__(self):
        self.sources, self.items = StringArrayBuilder(), StringArrayBuilder()
        self.errors: dict[int, Exception] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def add(self, source, item) -> None:
        if isinstance(item, Exception):
            self.errors[len(self.sources)] = item
            item = ""
        self.sources.append(source)
        self.items.append(item)

    def extend(self, pairs: Iterable[tuple[str, Any]]) -> None:
        for source, item in pairs:
            self.add(source, item)

    def add_files(self, files) -> None:
        """Files (their paths are their sources), packed as :func:`discover` gives them."""
        names = getattr(files, "names", None)
        if isinstance(names, StringArray):
            self.sources.extend(names)
            self.items.extend(names)
        else:
            self.extend((str(p), str(p)) for p in files)

    def add_text_file(self, path, skip_unreadable: bool) -> int:
        """The texts of a texts file, one per non-empty line, each sourced ``FILE:N`` (its
        N-th text), streamed; an unreadable file is one failed entry (``skip_unreadable``)
        or an error. How many entries were added."""
        from freebind.data.media import iter_texts

        try:
            texts = StringArray.pack(iter_texts(path))
        except Exception as exc:
            if not skip_unreadable:
                raise
            self.add(str(path), exc)
            return 1
        self.items.extend(texts)
        self.sources.extend(line_source(path, i + 1) for i in range(len(texts)))
        return len(texts)

    def build(self) -> tuple[StringArray, StringArray, dict[int, Exception]]:
        """``(sources, items, errors)``; items that equal their sources (files) share them."""
        sources, items = self.sources.build(), self.items.build()
        return sources, (sources if items == sources else items), self.errors


def _collect(paths: Sequence, texts, as_modality: str | None, columns=None,
             problems: list | None = None, ignored=None,
             allow_missing: bool = False) -> dict[str, _Entries]:
    """``{modality: entries}`` (:class:`_Entries`): files by extension (``as_modality``:
    every file given or found in a folder given); a ``.txt`` file holds one text per
    non-empty line, as ``texts`` and the build's text pools do, each sourced ``FILE:N`` (its
    N-th text). Tar shards (paths, brace patterns), tables and ``datasets`` folders among
    ``paths`` (and a table as ``texts``) are read by :mod:`freebind.data.readers` (``columns``:
    ``{modality: column}``); what they could not read, and text files with no text, go to
    ``problems``; files of an unknown extension to ``ignored``."""
    from freebind.data.media import discover
    from freebind.data.readers import container_kind, read_inputs, read_pool

    problems = [] if problems is None else problems
    columns = dict(columns or {})
    held = None
    if paths:
        paths, held = read_inputs(paths, columns=columns, allow_missing=allow_missing)
        problems += held.problems
    found = discover(paths, as_modality=as_modality, ignored=ignored) if paths else {}
    out: dict[str, _Entries] = {m: _Entries() for m in MODALITY_ORDER}
    if held is not None:
        for m in held.items:
            out.setdefault(m, _Entries()).extend(held.entries(m))
        held = None
    if texts is not None and container_kind(texts) is not None:
        got = read_pool("text", texts, column=columns.get("text"), allow_missing=allow_missing)
        problems += got.problems
        out["text"].extend(got.entries("text"))
        texts = got = None
    for m, files in found.items():
        if m != "text":
            out[m].add_files(files)
            continue
        for p in files:
            if not out["text"].add_text_file(p, skip_unreadable=True):
                problems.append({"path": str(p), "reason": "no text in the file"})
    if texts is not None:
        out["text"].add_text_file(texts, skip_unreadable=False)
    if len(out.get("point", ())):
        from freebind.data.points import require_mesh_reader

        sources, _, _ = out["point"].build()
        require_mesh_reader(iter(sources))   # before any work
    return {m: v for m, v in out.items() if len(v)}


def plan_embed(target, paths: Iterable = (), texts=None, output=None, *,
               factors: Sequence[str] | str = (), preset: str | None = None,
               fp16: bool = False, as_modality: str | None = None,
               space_options: Mapping[str, Any] | None = None, device: str | None = None,
               precision: str | None = None, partition_size: int = 100_000,
               batch_size: int = 64, shard_size: int = 2048, cache_dir=None,
               metadata: str = "parquet", strict: bool = False,
               progress: bool = True, columns: Mapping[str, str] | None = None,
               allow_missing: bool = False) -> EmbedPlan:
    """The shards of embedding ``paths`` (files or folders) and ``texts`` (a file, one text
    per line) with ``target`` (see :func:`freebind.open`) into ``output``.

    ``as_modality`` makes every file of ``paths`` that modality (depth, thermal, imu, …)
    instead of telling it by extension; ``space_options`` (and ``device``, ``precision``)
    go to every ``spaces.get``; ``metadata`` is ``"parquet"`` or ``"jsonl"``. ``paths``
    may name webdataset tar shards (brace patterns too), tables and ``datasets`` folders,
    ``texts`` a table; ``columns`` (``{"text": "caption", "audio": ...}``) names the table
    columns to read (see :mod:`freebind.data.readers`); ``allow_missing``: a brace
    pattern's missing shards are listed as skipped, not refused. Reads the
    inputs and resolves the target; writes nothing. ``target=None`` is the default bundle
    (:func:`freebind.run.implicit.default_target`)."""
    if target is None:
        from freebind.run.implicit import default_target

        target = default_target().value
    options = _checked_options(
        output, factors=factors, preset=preset, fp16=fp16, as_modality=as_modality,
        space_options=space_options, device=device, precision=precision,
        partition_size=partition_size, batch_size=batch_size, shard_size=shard_size,
        cache_dir=cache_dir, metadata=metadata, strict=strict, progress=progress)
    given = None
    from freebind.run.targets import Target

    if isinstance(target, Target):  # a resolved target: its reference and options
        given = target
        options = replace(options, factors=options.factors or tuple(target.factors),
                          preset=options.preset or target.preset,
                          space_options=options.space_options or dict(target.space_options))
        target = target.ref
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    problems: list[dict] = []
    from freebind.data.media import Ignored

    ignored = Ignored(keep=IGNORED_EXAMPLES)
    items = _collect(paths, texts, options.as_modality, columns, problems, ignored,
                     allow_missing)
    if not items:
        unknown = (f" ({len(ignored)} file(s) of an unknown extension, e.g. "
                   f"{ignored.examples[0]})" if len(ignored) else "")
        raise UsageError("nothing to embed: no files found" if options.as_modality else
                         "nothing to embed: no audio, image, video or text files found "
                         f"(by extension), and no texts{unknown}")
    plan = EmbedPlan(os.fspath(target), str(output), options, (), _target=given)
    tgt = plan.open_target()
    counts = {m: len(v) for m, v in items.items()}
    shards, unsupported = _shards({m: v.build() for m, v in items.items()}, tgt,
                                  options.partition_size)
    skipped = [{"path": p["path"], "reason": p["reason"]} for p in problems] + unsupported
    return replace(plan, shards=tuple(shards), name=tgt.name, dim=tgt.dim,
                   fingerprint=tgt.fingerprint, counts=counts,
                   skipped=tuple(skipped), ignored=len(ignored),
                   ignored_examples=tuple(str(p) for p in ignored.examples),
                   _target=tgt)


def _checked_options(output, *, factors, preset, fp16, as_modality, space_options, device,
                     precision, partition_size, batch_size, shard_size, cache_dir, metadata,
                     strict, progress) -> EmbedOptions:
    """:func:`plan_embed`'s arguments checked (a bad one refused in one line) and gathered
    into :class:`EmbedOptions`."""
    from freebind.util.vocab import merge_space_options

    if output is None:
        raise UsageError("output: the folder to write the partitions to is required")
    if int(partition_size) < 1:
        raise UsageError(f"partition_size={partition_size}: must be at least 1")
    if int(batch_size) < 1:
        raise UsageError(f"batch_size={batch_size}: must be at least 1")
    if int(shard_size) < 1:
        raise UsageError(f"shard_size={shard_size}: must be at least 1")
    fmt = str(metadata).lower()
    if fmt not in METADATA_FORMATS:
        raise UsageError(f"metadata={metadata!r}: use parquet or jsonl")
    if fmt == "parquet":
        from freebind.util.optional import require

        require("pyarrow", "parquet metadata", alternative="or use jsonl metadata")
    if as_modality is not None:
        as_modality = as_modality.lower()
        if as_modality not in MODALITY_ORDER:
            raise UsageError(f"as_modality={as_modality!r}: unknown modality; use one of "
                             f"{', '.join(MODALITY_ORDER)}")
    if isinstance(factors, str):
        factors = [factors]
    return EmbedOptions(
        factors=tuple(str(f) for f in factors or ()), preset=preset, fp16=bool(fp16),
        as_modality=as_modality,
        space_options=merge_space_options(space_options, device=device, precision=precision),
        partition_size=int(partition_size), batch_size=int(batch_size),
        shard_size=int(shard_size), cache_dir=None if cache_dir is None else str(cache_dir),
        metadata=fmt, strict=bool(strict), progress=bool(progress))


def _shards(items: Mapping[str, tuple], tgt, partition_size: int
            ) -> tuple[list[Shard], list[dict]]:
    """The shards of ``items`` (``{modality: (sources, items, errors)}``, as
    :meth:`_Entries.build` gives them) for target ``tgt``, ``partition_size`` items a shard,
    in :data:`MODALITY_ORDER`; and the inputs skipped because ``tgt`` lacks their
    modality. A shard's items and sources are views of the packed arrays."""
    import numpy as np

    skipped: list[dict] = []
    shards: list[Shard] = []
    for m in MODALITY_ORDER:
        if m not in items:
            continue
        sources, values, errors = items[m]
        if m not in tgt.modalities:
            skipped += [{"path": s, "reason": f"{tgt.name} has no {m} modality"}
                        for s in sources]
            continue
        failing = sorted(errors)
        for start in range(0, len(sources), partition_size):
            stop = min(len(sources), start + partition_size)
            bad = failing[bisect.bisect_left(failing, start):bisect.bisect_left(failing, stop)]
            failed = tuple((sources[i], reason(str(errors[i]), sources[i])) for i in bad)
            if bad:
                good = np.setdiff1d(np.arange(start, stop), np.asarray(bad, dtype=np.int64))
                part_sources = StringArray.pack(sources[good] if len(good) else [])
                part_items = part_sources if values is sources else \
                    StringArray.pack(values[good] if len(good) else [])
            else:
                part_sources = sources[start:stop]
                part_items = part_sources if values is sources else values[start:stop]
            shards.append(Shard(len(shards), m, part_items, part_sources, failed,
                                _digest(sources[start:stop])))
    return shards, skipped


def _digest(sources: StringArray) -> str:
    """What identifies a partition's inputs: the first 16 hex digits of the SHA-256 of its
    sources joined by newlines (computed a block at a time)."""
    h = hashlib.sha256()
    for a in range(0, len(sources), 65536):
        block = "\n".join(sources[a:a + 65536])
        h.update((("\n" if a else "") + block).encode())
    return h.hexdigest()[:16]


# --- the output folder --------------------------------------------------------------------

def shard_files(plan: EmbedPlan, shard: Shard) -> dict[str, Path]:
    """Where partition ``shard.index`` lives: ``embeddings``, ``metadata``, ``skipped``."""
    return partition_paths(plan.output, shard.modality, shard.index, plan.options.metadata)


def begin(plan: EmbedPlan) -> None:
    """Check that ``plan.output`` is empty or holds this same run, and write its manifest.
    Idempotent; :func:`write_shard` calls it when the manifest is missing."""
    output = Path(plan.output)
    manifest = plan.manifest()
    mpath = output / MANIFEST
    if not mpath.is_file():
        output.mkdir(parents=True, exist_ok=True)
        others = [p for p in output.iterdir() if p.name != MANIFEST
                  and not p.name.startswith(f".{MANIFEST}")]
        if others and not mpath.is_file():
            raise UsageError(f"{output}: folder is not empty and has no {MANIFEST}; "
                             f"choose an empty folder")
        if not mpath.is_file():
            text = json.dumps({**manifest, **bundle_record(plan.target)}, indent=1)
            atomic_write(mpath, lambda tmp: Path(tmp).write_text(text))
            return
    try:
        old = json.loads(mpath.read_text())
    except ValueError:
        old = None
    if isinstance(old, dict):
        old.pop("report", None)
        old.pop("bundle", None)  # where the bundle was: not part of the run's identity
    if old != manifest:
        raise UsageError(f"{output}: holds embeddings of another run (different target, "
                         f"factors, files or options); choose an empty folder")


_BUNDLE_HASHES: dict[tuple, str] = {}


def bundle_record(ref: str) -> dict:
    """``{"bundle": {"path", "content", "preset"}}`` for a bundle target (its absolute path
    and content hash, so that ``freebind index`` finds it, moved or not), else ``{}``."""
    from freebind.run.targets import is_bundle_ref, split_ref

    if not is_bundle_ref(ref):
        return {}
    path, preset = split_ref(ref)
    p = Path(path).resolve()
    if not p.is_file():
        return {}
    return {"bundle": {"path": str(p), "content": bundle_hash(p), "preset": preset}}


def bundle_hash(path: os.PathLike) -> str:
    """A bundle file's content hash (cached per path, size and modification time)."""
    from freebind.data.store import file_key

    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _BUNDLE_HASHES:
        _BUNDLE_HASHES[key] = file_key(path)
    return _BUNDLE_HASHES[key]


def shard_done(plan: EmbedPlan, shard: Shard) -> bool:
    """Whether partition ``shard.index`` is complete on disk."""
    return all(p.is_file() for p in shard_files(plan, shard).values())


@dataclass
class ShardResult:
    """One partition: its rows, what was skipped (``{"path", "reason"}``) and whether this
    call wrote it (False: kept from an earlier run)."""

    index: int
    modality: str
    rows: int
    skipped: list[dict]
    written: bool
    files: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)


def read_shard(plan: EmbedPlan, shard: Shard) -> ShardResult:
    """The result of a partition already on disk."""
    import numpy as np

    files = shard_files(plan, shard)
    rows = int(np.load(files["embeddings"], mmap_mode="r").shape[0])
    skipped = [json.loads(line) for line in files["skipped"].read_text().splitlines()
               if line.strip()]
    return ShardResult(shard.index, shard.modality, rows, skipped, False,
                       {k: str(v) for k, v in files.items()})


def run_shard(plan: EmbedPlan, shard: Shard, target=None, store=None) -> ShardResult:
    """Encode ``shard`` through the embedding store and write its partition (or read it
    back when it is already complete). ``target``/``store`` default to the plan's."""
    if shard_done(plan, shard):
        return read_shard(plan, shard)
    target = target if target is not None else plan.open_target()
    store = store if store is not None else plan.open_store()
    rows, kept, failures = target.embed(shard.modality, list(shard.items), store=store,
                                        batch_size=plan.options.batch_size,
                                        progress=plan.options.progress, lazy=True)
    return write_shard(plan, shard, rows, kept, failures)


def _failure(f) -> tuple[int, str]:
    if isinstance(f, Mapping):
        return int(f["index"]), str(f["reason"])
    if isinstance(f, (tuple, list)):
        return int(f[0]), str(f[1])
    return int(f.index), str(f.reason)


def write_shard(plan: EmbedPlan, shard: Shard, rows, kept, failures=()) -> ShardResult:
    """Write partition ``shard.index`` from ``rows`` ``[len(kept), dim]`` (the embeddings of
    ``shard.items[i]`` for ``i`` in ``kept``, in that order; an array, or rows computed
    block by block, :class:`freebind.run.targets.Rows`, written as they come so a partition is
    never held whole) and ``failures`` (records with
    ``index`` into ``shard.items`` and ``reason``, or ``(index, reason)`` pairs). Atomic
    per file, the embeddings last (their presence marks the partition complete); the same
    inputs always give the same bytes."""
    import numpy as np

    if not (Path(plan.output) / MANIFEST).is_file():
        begin(plan)
    files = shard_files(plan, shard)
    kept = [int(i) for i in np.asarray(kept, dtype=np.int64).tolist()]
    dtype = np.float16 if plan.options.fp16 else np.float32
    streamed = hasattr(rows, "blocks")
    arr = rows if streamed else np.ascontiguousarray(np.asarray(rows), dtype=dtype)
    shape = tuple(arr.shape)
    if len(shape) != 2 or shape[0] != len(kept) or (len(kept) and shape[1] != plan.dim):
        raise UsageError(f"partition {shard.index}: rows of shape {shape} do not "
                         f"match {len(kept)} kept items of dim {plan.dim}")
    if shape[0] == 0:
        arr, streamed = np.zeros((0, plan.dim), dtype=dtype), False
    meta = [{"path": shard.sources[i], "modality": shard.modality, "row": r}
            for r, i in enumerate(kept)]
    _add_input_fields(meta, [shard.sources[i] for i in kept], shard.modality)
    fails = sorted(_failure(f) for f in failures)
    skipped = [{"path": s, "reason": r} for s, r in shard.failed] + \
        [{"path": shard.sources[i], "reason": r} for i, r in fails]
    _write_metadata(files["metadata"], meta, plan.options.metadata)
    text = "".join(json.dumps(x) + "\n" for x in skipped)
    atomic_write(files["skipped"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    # last: its presence marks the partition complete
    if streamed:
        _write_npy_blocks(files["embeddings"], (len(kept), plan.dim), dtype, arr.blocks())
    else:
        _write_npy(files["embeddings"], arr)
    return ShardResult(shard.index, shard.modality, len(meta), skipped, True,
                       {k: str(v) for k, v in files.items()})


def _write_npy(path: Path, arr) -> None:
    import numpy as np

    def w(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    atomic_write(path, w)


def _write_npy_blocks(path: Path, shape: tuple, dtype, blocks) -> None:
    """An ``.npy`` of ``shape`` filled from ``(start, rows)`` blocks through a memory map
    of the temporary file (atomic; the same bytes as ``np.save`` of the whole array)."""
    import numpy as np

    def w(tmp):
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        try:
            for start, block in blocks:
                out[start:start + len(block)] = block
            out.flush()
        finally:
            del out

    atomic_write(path, w)


def _add_input_fields(meta: list[dict], sources: list[str], modality: str) -> None:
    """The input rows' caption, url and key (and the column a text was read from) beside
    each metadata row, as clip-retrieval keeps them
    (:func:`freebind.data.readers.source_fields`); absent ones are left out."""
    from freebind.data.readers import source_fields

    for name, values in source_fields(sources, texts=modality == "text").items():
        if name in ("path", "modality", "row"):
            name = f"input_{name}"
        for r, v in zip(meta, values):
            r[name] = v


def _write_metadata(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"path": pa.array([r["path"] for r in rows], type=pa.string()),
                          "modality": pa.array([r["modality"] for r in rows],
                                               type=pa.string()),
                          "row": pa.array([r["row"] for r in rows], type=pa.int64()),
                          **{c: pa.array([r.get(c) for r in rows], type=pa.string())
                             for c in dict.fromkeys(c for r in rows for c in r)
                             if c not in ("path", "modality", "row")}})
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# --- the report ---------------------------------------------------------------------------

@dataclass
class EmbedReport:
    """What a run did: per modality the inputs found, rows written, partitions, items kept
    and skipped; every skipped input with its reason; where each partition's rows came
    from (its metadata file lists the source of every row)."""

    target: str
    output: str
    dim: int
    dtype: str
    partitions: int
    written: int
    reused: int
    rows: int
    skipped: list[dict]
    counts: dict[str, int]
    modalities: dict[str, dict[str, int]]
    shards: list[dict]
    #: the engine's encoder work (freebind.run.engines.FillReport.to_dict()), if any
    engine: dict | None = None
    #: ``[i, n]`` when only slice i of n was run (see ``embed(shard=)``)
    slice: list[int] | None = None
    #: files left out for an unknown extension (not skipped inputs): count, first few
    ignored: int = 0
    ignored_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.skipped

    def to_dict(self) -> dict:
        return asdict(self)


def finish(plan: EmbedPlan, results: Sequence[ShardResult], *,
           partial: bool = False) -> EmbedReport:
    """The run's report from every shard's result; written into ``embed.json``.
    ``partial``: a report of the shards given only (one slice of the run), not written."""
    by_index = {r.index: r for r in results}
    missing = [s.index for s in plan.shards if s.index not in by_index]
    if partial:
        plan = replace(plan, shards=tuple(s for s in plan.shards if s.index in by_index))
    elif missing:
        raise UsageError(f"{plan.output}: no result for partition(s) "
                         f"{', '.join(map(str, missing[:5]))}")
    ordered = [by_index[s.index] for s in plan.shards]
    skipped = [dict(s) for s in plan.skipped] + [x for r in ordered for x in r.skipped]
    per: dict[str, dict[str, int]] = {}
    for m, n in plan.counts.items():
        per[m] = {"files": int(n), "rows": 0, "partitions": 0, "kept": 0, "skipped": 0}
    for s in plan.skipped:
        for m, st in per.items():
            if s["reason"].endswith(f" has no {m} modality"):
                st["skipped"] += 1
    for r in ordered:
        st = per[r.modality]
        st["rows"] += r.rows
        st["kept"] += r.rows
        st["partitions"] += 1
        st["skipped"] += len(r.skipped)
    out = Path(plan.output)
    shards = [{"k": r.index, "modality": r.modality, "rows": r.rows,
               "embeddings": os.path.relpath(r.files["embeddings"], out),
               "metadata": os.path.relpath(r.files["metadata"], out),
               "skipped": len(r.skipped)} for r in ordered]
    report = EmbedReport(plan.name, plan.output, plan.dim, plan.dtype, len(plan.shards),
                         sum(r.written for r in ordered), sum(not r.written for r in ordered),
                         sum(r.rows for r in ordered), skipped, dict(plan.counts), per, shards)
    report.ignored, report.ignored_examples = plan.ignored, list(plan.ignored_examples)
    if partial:
        return report
    data = {**plan.manifest(), **bundle_record(plan.target),
            "report": {k: v for k, v in report.to_dict().items() if k not in ("output",)}}
    text = json.dumps(data, indent=1)
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    return report


# --- engines ------------------------------------------------------------------------------

def run_local(plan: EmbedPlan, target=None, store=None) -> list[ShardResult]:
    """The in-process engine: every shard in order, one target and one store."""
    todo = [s for s in plan.shards if not shard_done(plan, s)]
    if todo:
        target = target if target is not None else plan.open_target()
        store = store if store is not None else plan.open_store()
    return [run_shard(plan, s, target, store) for s in plan.shards]


def _run_engine(name: str):
    def runner(plan, **options):
        from freebind.run.engines import shards

        return shards.run(plan, name, run_shard, shard_done, **options)

    return runner


#: name -> runner(plan, **engine_options) -> [ShardResult] (or ([ShardResult], engine
#: report)); runners of freebind.run.engines take ``shard=(i, n)``
ENGINES: dict[str, Callable[..., list[ShardResult]]] = {"local": run_local,
                                                        "ray": _run_engine("ray")}


def register_engine(name: str, runner: Callable[..., list[ShardResult]]) -> None:
    """Make ``embed(..., engine=name)`` run the plan with ``runner(plan, **options)``."""
    ENGINES[name] = runner


def embed(target, paths: Iterable = (), texts=None, output=None, *, engine: str = "local",
          engine_options: Mapping[str, Any] | None = None, shard=None, to: str | None = None,
          **options) -> EmbedReport:
    """Embed ``paths`` (files or folders) and ``texts`` (one text per line) with ``target``
    (a space reference, a bundle, ``bundle@preset``) into partitions under ``output``.

    ``options`` are those of :func:`plan_embed` (factors, preset, fp16, as_modality,
    space_options, device, precision, partition_size, batch_size, shard_size, cache_dir,
    metadata, strict, progress). ``engine`` picks who runs the shards (``"local"``: this
    process). With ``strict=True`` a run that skipped anything raises
    :class:`freebind.util.errors.EmbedSkipped` (its ``report`` attribute holds the report)
    after writing everything else.

    ``engine="ray"`` runs the encoders on Ray Data; ``engine_options`` are those of
    :class:`freebind.run.engines.EngineOptions` (workers, cpus_per_worker, gpus_per_worker,
    ray_address, …; see docs/scale-out.md). ``shard=(i, n)`` (or ``"i/n"``) writes only
    the partitions ``k`` with ``k % n == i`` and returns their report (``slice`` set):
    run every slice, then once without ``shard`` for the whole report.

    ``to="lancedb:PATH"`` (``qdrant:…``, ``milvus:…``; no ``output``) writes into a vector
    database instead (:func:`freebind.run.sinks.write_plan`, which returns a
    :class:`~freebind.run.sinks.SinkReport`; ``presets=False`` leaves out the preset
    columns)."""
    from freebind.run.engines import EngineOptions, parse_shard
    from freebind.run.preflight import leaf_spaces, path_problems, raise_if, space_problems

    sink = _sink_for(to, output, shard, engine, options)   # its package, before any work
    paths = list(paths or ())
    # libraries, weights, then inputs: every failure in one message, before any work
    raise_if(f"embed with {target}",
             space_problems(leaf_spaces(target), options.get("space_options"))
             + path_problems([("PATH", p) for p in paths]
                             + [("--texts", texts if isinstance(texts, (str, Path)) else None)]))
    engine_options = dict(engine_options or {})
    if isinstance(engine, EngineOptions):
        engine_options = {**engine.to_dict(), **engine_options}
        engine = engine_options.pop("engine")
    engine_options.pop("engine", None)
    if engine not in ENGINES:
        raise UsageError(f"engine={engine!r}: unknown engine; use one of "
                         f"{', '.join(ENGINES)}")
    if sink is not None:
        from freebind.run.sinks import write_plan

        presets = options.pop("presets", True)
        options["metadata"] = "jsonl"   # no partitions: no parquet needed
        return write_plan(plan_embed(target, paths, texts, sink.text, **options), sink,
                          presets=presets)
    shard = parse_shard(shard)
    if engine == "local" and shard is None and not engine_options:
        runner = ENGINES["local"]
    elif engine in ("local", "ray"):
        from freebind.run.engines import engine_options as check

        check(engine, **engine_options)  # bad options (and a missing Ray) before any work
        runner = _run_engine(engine)
        engine_options["shard"] = shard
    else:
        runner = ENGINES[engine]
    plan = plan_embed(target, paths, texts, output, **options)
    begin(plan)
    results = runner(plan, **engine_options)
    engine_report = None
    if isinstance(results, tuple):
        results, engine_report = results
    report = finish(plan, results, partial=shard is not None)
    report.engine = engine_report.to_dict() if engine_report is not None else None
    if shard is not None:
        report.slice = list(shard)
    if plan.options.strict and report.skipped:
        from freebind.util.errors import EmbedSkipped

        raise EmbedSkipped(f"{len(report.skipped)} input(s) skipped (first: "
                           f"{report.skipped[0]['path']}: {report.skipped[0]['reason']})",
                           report)
    return report


def _sink_for(to, output, shard, engine, options):
    """The parsed ``to`` URI (its engine's package imported, else the extra named), or
    None; ``to`` excludes ``output``, ``shard`` and another engine."""
    if to is None:
        if "presets" in options:
            raise UsageError("presets= applies to embed(..., to=URI)")
        return None
    if output is not None or shard is not None or engine != "local":
        raise UsageError("to=URI writes into a vector database: leave out output, shard and "
                         "engine")
    from freebind.run.sinks import require

    return require(to)


# ``freebind.run.partitions(...)`` is :func:`embed`, as ``freebind.embed(...)`` is
make_callable(__name__, __name__, "embed")
