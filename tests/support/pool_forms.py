"""The mini pools written in the other forms users keep data in: webdataset tar shards (a
brace pattern), caption tables (parquet, CSV, TSV, JSON lines), a table of audio bytes, a
table of image paths, a ``datasets`` folder. Same bytes, same order as the folders."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_shards(files: list[Path], out: Path, prefix: str, per_shard: int,
                 captions: list[str] | None = None) -> str:
    """``out/{prefix}-{000000..}.tar``: one sample per file (``KEY.<ext>``, and a
    ``KEY.json`` caption when ``captions`` is given); returns the brace pattern."""
    out.mkdir(parents=True, exist_ok=True)
    n = (len(files) + per_shard - 1) // per_shard
    for s in range(n):
        with tarfile.open(out / f"{prefix}-{s:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
            for i in range(s * per_shard, min(len(files), (s + 1) * per_shard)):
                key = f"{i:06d}"
                _add(tf, f"{key}{files[i].suffix}", files[i].read_bytes())
                if captions is not None:
                    _add(tf, f"{key}.json", json.dumps({"caption": captions[i]}).encode())
    return str(out / f"{prefix}-{{000000..{n - 1:06d}}}.tar")


def write_text_tables(texts: list[str], out: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": list(range(len(texts))), "caption": texts})
    paths = {"parquet": out / "captions.parquet", "csv": out / "captions.csv",
             "tsv": out / "captions.tsv", "jsonl": out / "captions.jsonl"}
    pq.write_table(table, paths["parquet"], row_group_size=7)
    pcsv.write_csv(table, paths["csv"])
    pcsv.write_csv(table, paths["tsv"], pcsv.WriteOptions(delimiter="\t"))
    paths["jsonl"].write_text("".join(json.dumps({"id": i, "caption": t}) + "\n"
                                      for i, t in enumerate(texts)))
    return paths


def write_bytes_table(files: list[Path], path: Path, column: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"name": [p.name for p in files],
                             column: [p.read_bytes() for p in files]}), path, row_group_size=5)
    return path


def write_paths_table(files: list[Path], path: Path, column: str) -> Path:
    """A CSV of paths relative to its folder."""
    rel = [str(p.relative_to(path.parent)) for p in files]
    path.write_text(f"{column},other\n" + "".join(f"{r},x\n" for r in rel))
    return path


def write_forms(pools: Path, out: Path) -> dict:
    """Every form of the pools under ``pools`` (``freebind mini pools`` output)."""
    audio = sorted((pools / "audio").iterdir())
    image = sorted((pools / "image").iterdir())
    texts = [t for t in (pools / "texts.txt").read_text().splitlines() if t.strip()]
    return {
        "audio_tars": write_shards(audio, out / "shards", "audio", 7),
        "image_tars": write_shards(image, out / "shards", "image", 9),
        "caption_tars": write_shards(audio, out / "capshards", "cap", 11, captions=texts),
        "tables": write_text_tables(texts, out / "tables"),
        "audio_bytes": write_bytes_table(audio, out / "audio.parquet", "audio"),
        "image_paths": write_paths_table(image, pools / "images.csv", "image_path"),
        "audio": audio, "image": image, "texts": texts,
    }
