"""The ray engine: chunks encoded on Ray Data, Ray's batch-inference path.

Every encoder batch of every chunk still to do becomes one row of a dataset. A read stage
(stateless Ray tasks, in parallel) decodes the batch's items (the space's ``decode_item``,
see :func:`freebind.run.targets.decode_item`; undecodable items are marked there with their
reason); an actor pool (``workers`` actors, each holding the job's encoders, loaded once)
encodes the decoded batch (``encode_decoded``) exactly as the store would: at once, or
item by item when one of its items failed, so every row is the same float the local engine
computes. The driver streams the results, puts each completed chunk into the store as the
very shard the local engine writes (atomic; a retried or repeated write rewrites the same
keys), and drives one progress bar.

Faults: Ray restarts a killed actor and retries its batch; a killed driver loses only chunks
not yet written. The driver joins ``ray_address`` (or ``RAY_ADDRESS``), else uses a Ray
already initialised in this process, else starts a local Ray for the run and stops it after.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import pickle
import socket
import time

import numpy as np

from freebind.util.errors import FreebindError, MediaError
from freebind.util.progress import bar

#: per-process state of Ray worker processes: setup hooks run, spaces opened
_SETUP_DONE: set[str] = set()
#: memory Ray reserves for one read-stage (decoding) task, in bytes
DECODE_MEMORY = 128 * 2**20


def _run_setup(setup: str | None) -> None:
    if setup and setup not in _SETUP_DONE:
        module, _, func = setup.partition(":")
        getattr(importlib.import_module(module), func)()
        _SETUP_DONE.add(setup)


def _space(ref: str, options: dict):
    from freebind import spaces

    return spaces.get(ref, **options)  # loaded once per process and options


def _decode(batch: dict, setup=None, space_options=None) -> dict:
    """Read stage: one row per encoder batch; its items decoded to encoder inputs
    (:func:`freebind.run.targets.decode_item`: the space's own decoder where it has one, else a
    readability check), undecodable ones marked with their reason."""
    from freebind.util.text import reason
    from freebind.run.targets import decode_item

    _run_setup(setup)
    payloads = []
    for ref, modality, items in zip(batch["ref"], batch["modality"], batch["items"]):
        space = _space(str(ref), dict(space_options or {}))
        entries = []
        for item in json.loads(items):
            try:
                entries.append((True, decode_item(space, str(modality), item)))
            except MediaError as exc:
                entries.append((False, reason(exc, item)))
        payloads.append(pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL))
    out = {k: batch[k] for k in ("chunk", "batch", "ref", "modality", "items")}
    out["payload"] = np.array(payloads, dtype=object)
    return out


def _encode_decoded(space, modality: str, inputs: list):
    """:func:`freebind.run.targets.encode_decoded` as one encoder batch of ``len(inputs)``
    (what the store's ``space.encode(batch, batch_size=len(batch))`` runs)."""
    import inspect

    from freebind.run.targets import encode_decoded

    hook = getattr(space, "encode_decoded", None)
    if hook is not None and "batch_size" in inspect.signature(hook).parameters:
        from freebind.util.arrays import as_float32

        return as_float32(hook(modality, inputs, batch_size=max(1, len(inputs))))
    return encode_decoded(space, modality, inputs)


def encode_entries(space, modality: str, entries, items):
    """Rows of one decoded batch (``entries`` of ``items``) as the store computes them:
    (float32 [kept, dim], ok mask, reasons of the failed items). The whole batch in one
    call when every item decoded; else item by item (what the store does after a batch
    fails on a bad item). Rows with a NaN or an infinity are refused like ``encode``
    refuses them (:mod:`freebind.spaces.guard`)."""
    from freebind.spaces.guard import check_finite
    from freebind.util.text import reason

    def enc(values, of):
        return check_finite(_encode_decoded(space, modality, values), str(space.name),
                            modality, of)

    dim = int(space.dim)
    if all(ok for ok, _ in entries):
        try:
            return enc([v for _, v in entries], items), [True] * len(entries), []
        except MediaError:
            pass
    rows, mask, reasons = [], [], []
    for (ok, value), item in zip(entries, items):
        if not ok:
            mask.append(False)
            reasons.append(value)
            continue
        try:
            rows.append(enc([value], [item])[0])
            mask.append(True)
        except MediaError as exc:
            mask.append(False)
            reasons.append(reason(_named(exc, item), item))
    emb = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    return emb, mask, reasons


def _named(exc: Exception, item) -> Exception:
    """A guard refusal raised by an encode half names its row ("item 0: …"); name the
    item instead, as ``encode`` does, so the reason reads the same on every engine."""
    from freebind.spaces.guard import NonFiniteEmbedding, item_label

    msg = str(exc)
    if isinstance(exc, NonFiniteEmbedding) and msg.startswith("item 0: "):
        return NonFiniteEmbedding(f"{item_label(item)}: {msg[len('item 0: '):]}")
    return exc


class _Encoder:
    """An actor of the pool: the job's spaces, loaded once; encodes decoded batches."""

    def __init__(self, refs, setup=None, space_options=None):
        _run_setup(setup)
        self.spaces = {ref: _space(ref, dict(space_options or {})) for ref in refs}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        embs, masks, reasons, seconds = [], [], [], []
        for ref, modality, payload, items in zip(batch["ref"], batch["modality"],
                                                 batch["payload"], batch["items"]):
            entries = pickle.loads(payload)
            t = time.perf_counter()
            emb, mask, why = encode_entries(self.spaces[str(ref)], str(modality), entries,
                                            json.loads(items))
            seconds.append(time.perf_counter() - t)
            embs.append(emb.tobytes())
            masks.append(json.dumps(mask))
            reasons.append(json.dumps(why))
        n = len(embs)
        return {"chunk": batch["chunk"], "batch": batch["batch"],
                "emb": np.array(embs, dtype=object), "mask": np.array(masks, dtype=object),
                "reasons": np.array(reasons, dtype=object),
                "seconds": np.array(seconds, dtype=np.float64),
                "worker": np.array([self.worker] * n, dtype=object)}


def _encoder_class(refs, setup=None, space_options=None):
    """The actor class with the job's arguments bound in: Ray Data ships the class to each
    actor (and to a restarted one) and constructs it without arguments."""
    bound = (tuple(refs), setup, dict(space_options or {}))

    class FreebindEncoder(_Encoder):
        def __init__(self):
            super().__init__(*bound)

    return FreebindEncoder


def connect(options) -> tuple[bool, float]:
    """Join or start Ray; returns (whether this call connected, so must disconnect; the
    seconds it took)."""
    import ray

    t = time.perf_counter()
    if ray.is_initialized():
        return False, 0.0
    address = options.ray_address or os.environ.get("RAY_ADDRESS")
    common = dict(logging_level=logging.ERROR, configure_logging=True,
                  include_dashboard=False)
    try:
        if address:
            ray.init(address=address, **common)
        else:
            need = options.workers * options.cpus_per_worker + options.decode_cpus
            ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(need)), **common)
    except ConnectionError as exc:
        raise FreebindError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return True, time.perf_counter() - t


def _quiet_ray_data():
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the engine draws one bar over all workers
    try:
        ctx.issue_detectors_config.detectors = []
    except AttributeError:  # older Ray Data
        pass
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ctx


def run(chunks, spaces, store, options, report, batch_size: int = 64, progress: bool = True,
        space_options: dict | None = None) -> None:
    """Encode ``chunks`` on Ray Data and put each into the store as it completes."""
    import ray
    import ray.data  # noqa: F401  (a missing Ray Data fails before Ray starts)

    rows, expected = _batch_rows(chunks, batch_size)
    owned, init_seconds = connect(options)
    t_start = time.perf_counter()
    try:
        _quiet_ray_data()
        ds = _pipeline(rows, sorted({c.ref for c in chunks}), options,
                       dict(space_options or {}))
        with bar(total=sum(len(c.todo) for c in chunks), unit="item",
                 desc=f"embed (ray, {options.workers} worker(s))",
                 disable=not progress) as pbar:
            stats, first = _drain(ds, {c.index: c for c in chunks}, expected, spaces, store,
                                  batch_size, report, pbar)
        if expected:
            raise FreebindError(f"the ray engine returned no rows for {len(expected)} "
                                f"chunk(s); rerun to resume")
        report.workers += sorted(stats.values(), key=lambda s: s.worker)
        report.startup_seconds = round(init_seconds + ((first or t_start) - t_start), 3)
    finally:
        if owned:
            ray.shutdown()


def _batch_rows(chunks, batch_size: int) -> tuple[list[dict], dict[int, int]]:
    """The dataset's rows (one per encoder batch of every chunk: chunk, batch, ref,
    modality and its items as JSON) and how many batches each chunk has."""
    from freebind.run.engines.chunks import batches

    rows, expected = [], {}
    for c in chunks:
        bs = batches(c, batch_size)
        expected[c.index] = len(bs)
        rows += [{"chunk": c.index, "batch": b, "ref": c.ref, "modality": c.modality,
                  "items": json.dumps(list(items))} for b, items in enumerate(bs)]
    return rows, expected


def _pipeline(rows: list[dict], refs: list[str], options, space_options: dict):
    """The Ray Data pipeline over ``rows``: a decoding read stage, then the encoder actors."""
    import ray.data

    common = dict(setup=options.setup, space_options=space_options)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 1000)))
    # the read stage's memory reservation, which the actors lack, keeps it a stage of
    # its own (Ray Data fuses stages of equal resources into the actors), so decoding
    # runs in parallel with encoding
    ds = ds.map_batches(_decode, batch_size=1, fn_kwargs=common,
                        num_cpus=options.decode_cpus, memory=DECODE_MEMORY)
    return ds.map_batches(_encoder_class(refs, **common), batch_size=1,
                          compute=ray.data.ActorPoolStrategy(size=int(options.workers)),
                          num_cpus=options.cpus_per_worker,
                          num_gpus=options.gpus_per_worker or None)


def _drain(ds, by_index: dict, expected: dict[int, int], spaces, store, batch_size: int,
           report, pbar):
    """Stream the pipeline's results, putting each chunk into the store once all its
    batches are in (``expected`` loses the chunks written). Returns the per-worker stats
    and when the first result came."""
    from freebind.run.engines.options import WorkerStats

    got: dict[int, dict[int, tuple]] = {}
    stats: dict[str, WorkerStats] = {}
    first = None
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if first is None:
                first = time.perf_counter()
            for i in range(len(out["chunk"])):
                g, b = int(out["chunk"][i]), int(out["batch"][i])
                if g not in expected or b in got.get(g, {}):
                    continue  # a chunk already written, or a batch delivered twice
                chunk = by_index[g]
                dim = int(spaces[chunk.ref].dim)
                emb = np.frombuffer(out["emb"][i], dtype=np.float32).reshape(-1, dim)
                mask = json.loads(out["mask"][i])
                w = str(out["worker"][i])
                s = stats.setdefault(w, WorkerStats(w))
                s.items += len(mask)
                s.seconds += float(out["seconds"][i])
                s.failures += mask.count(False)
                got.setdefault(g, {})[b] = (emb, mask, json.loads(out["reasons"][i]))
                pbar.update(len(mask))
                if len(got[g]) == expected[g]:
                    _put(store, spaces[chunk.ref], chunk, got.pop(g), batch_size, report)
                    del expected[g]
    except FreebindError:
        raise
    except Exception as exc:  # a worker's error, wrapped by Ray
        raise FreebindError(f"the ray engine failed: {_root_message(exc)}") from None
    return stats, first


def _put(store, space, chunk, parts: dict, batch_size: int, report) -> None:
    """Assemble a chunk's batches in order and write its store shard."""
    from freebind.run.engines.chunks import batches

    keys, embs = [], []
    for b, items in enumerate(batches(chunk, batch_size)):
        emb, mask, reasons = parts[b]
        start = b * batch_size
        ok = [k for (k, _), m in zip(chunk.todo[start:start + len(items)], mask) if m]
        keys += ok
        embs.append(emb)
        bad = [it for it, m in zip(items, mask) if not m]
        report.failures += [{"path": it, "reason": why, "modality": chunk.modality}
                            for it, why in zip(bad, reasons)]
    if keys:
        store.put(space, chunk.modality, keys, np.concatenate(embs))
        report.written += 1
        report.encoded += len(keys)


def _root_message(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc.__cause__
    while cause is not None and cause is not exc:
        exc = cause
        cause = getattr(exc, "cause", None) or exc.__cause__
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
