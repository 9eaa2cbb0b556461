"""``freebind build EXPR``: train a fused space's projectors on unpaired pools; write a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import (
    console, print_command, print_json, print_skipped, print_table,
)
from freebind_cli.engines import EngineFlags, print_workers
from freebind_cli.options import (
    SpaceFlags, batch_size_option, cache_dir_option, json_option, quiet_option,
    with_flag_groups,
)

AUDIO_POOL_HELP = (
    "Audio pool: a folder of files, webdataset tar shards ('shards/{000000..000099}.tar', a "
    ".tar, a folder of .tar), a table (.parquet .csv .tsv .jsonl: --audio-column of paths or "
    "bytes) or a datasets folder (save_to_disk).")
TEXT_POOL_HELP = (
    "Text pool: a text file (one text per line), a table (--text-column), tar shards "
    "(.txt/.json captions) or a datasets folder.")
POOLS_HELP = (
    'Pools file (JSON: audio/image/text paths, or {"path": ..., "column": ...}) or a folder '
    "holding pools.json.")
HYPER_HELP = (
    "Training option KEY=VALUE for every job (hidden, epochs, batch, lr, temp, topk, tau, "
    "patience, sim=fp32|tf32|bf16, amp=bf16, …); repeatable.")


def _parse_hyper(specs: list[str]) -> dict:
    from freebind.util.errors import UsageError

    out = {}
    for spec in specs or []:
        key, sep, value = spec.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--hyper {spec!r}: expected KEY=VALUE, e.g. epochs=10")
        value = value.strip()
        try:
            parsed = int(value)
        except ValueError:
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
        out[key.strip()] = parsed
    return out


def _store_dtype(value: str) -> str:
    from freebind.util.errors import UsageError

    if value.strip().lower() not in ("fp32", "fp16", "float32", "float16"):
        raise UsageError(f"--store-dtype {value!r}: expected fp32 or fp16")
    return value.strip().lower()


def _with_column(modality: str, spec, column, allow_missing: bool = False):
    """A pool flag with its ``--…-column`` (and ``--allow-missing``): ``{"path", "column",
    "allow_missing"}`` (what pools.json says)."""
    if allow_missing and spec is not None:
        return {"path": str(spec), "allow_missing": True,
                **({"column": column} if column else {})}
    if column is None:
        return spec
    if spec is None:
        from freebind.util.errors import UsageError

        raise UsageError(f"--{modality}-column {column}: give the table with --{modality}")
    return {"path": str(spec), "column": column}


@with_flag_groups
def build(
    expression: str = typer.Argument(..., help='Space expression, e.g. '
                                               '"mini:bind + d(mini:vl) + c(mini:clap)".'),
    audio: Optional[Path] = typer.Option(None, "--audio", help=AUDIO_POOL_HELP),
    image: Optional[Path] = typer.Option(None, "--image",
                                         help="Image pool: the same forms as --audio."),
    text: Optional[Path] = typer.Option(None, "--texts", help=TEXT_POOL_HELP),
    audio_column: Optional[str] = typer.Option(None, "--audio-column",
                                               help="Table column of the audio pool."),
    image_column: Optional[str] = typer.Option(None, "--image-column",
                                               help="Table column of the image pool."),
    text_column: Optional[str] = typer.Option(
        None, "--text-column", help="Table column (or tar .json field) of the text pool."),
    pools: Optional[Path] = typer.Option(None, "--pools", help=POOLS_HELP),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="A pool's brace pattern with missing shards is "
                                            "read without them (listed), not refused."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Bundle to write (.safetensors); default: "
                                               "named after the expression."),
    cache_dir: Optional[Path] = cache_dir_option(),
    seed: int = typer.Option(0, "--seed", help="Training seed (same seed: same bundle)."),
    hyper: List[str] = typer.Option([], "--hyper", help=HYPER_HELP),
    mini_pool_size: int = typer.Option(2000, "--mini-pool-size",
                                       help="Items per modality of the default mini pools."),
    batch_size: int = batch_size_option(help="Encoder batch size."),
    threads: Optional[int] = typer.Option(None, "--threads",
                                          help="torch CPU threads (default: 1 for mini "
                                               "spaces, else torch's default)."),
    store_dtype: str = typer.Option("fp32", "--store-dtype", metavar="fp32|fp16",
                                    help="Precision of new cache entries; fp16 halves the "
                                         "cache and reads pools memory-mapped."),
    force: bool = typer.Option(False, "--force", help="Overwrite the bundle at the output "
                               "even when a build of another graph would lose its presets or "
                               "recorded results (the same graph keeps them)."),
    as_json: bool = json_option("the build report"),
    quiet: bool = quiet_option(),
    space_flags: SpaceFlags = ...,
    engine_flags: EngineFlags = ...,
) -> None:
    """Build a fused space: embed pools with every space (cached), build pseudo tuples, train
    each bond's projector group, and save one .safetensors bundle.

    Pools may be folders, a text file, webdataset tar shards, tables (parquet, CSV, TSV,
    JSON lines) or datasets folders, read in place; a space whose rows were all imported
    (freebind import) is not loaded. With only mini spaces and no pools, the default mini
    pools are generated once."""
    from freebind.build.orchestrator import build as run_build

    options = space_flags.parse()
    engine_kw = engine_flags.kwargs()
    audio, image, text = (_with_column(flag, spec, col, allow_missing)
                          for flag, spec, col in (("audio", audio, audio_column),
                                                  ("image", image, image_column),
                                                  ("text", text, text_column)))
    err = console(stderr=True)
    log = None if as_json or quiet else (lambda msg: err.print(f"[dim]{msg}[/]"))
    fused = run_build(expression, audio=audio, image=image, text=text, pools=pools,
                      output=output, cache_dir=cache_dir, seed=seed,
                      hyper=_parse_hyper(hyper), batch_size=batch_size,
                      mini_pool_size=mini_pool_size, progress=not (as_json or quiet), log=log,
                      threads=threads, space_options=options,
                      store_dtype=_store_dtype(store_dtype), force=force, **engine_kw)
    shard = engine_kw.get("shard")
    report = fused if shard is not None else fused.build_report
    if as_json:
        print_json(report.to_dict())
    elif shard is not None:  # one slice of the embedding stage: no bundle
        render_slice(report, shard, console())
    else:
        render(report, console())


def render_slice(report, shard: tuple[int, int], out) -> None:
    """What one ``--shard I/N`` run did (it writes the cache, not a bundle)."""
    i, n = shard
    print_workers(report.engine, out)
    out.print(f"slice {i}/{n}: {report.encoded} item(s) encoded into the cache "
              f"({report.cache_dir}); {len(report.skipped)} unreadable. Run every "
              f"slice, then once without --shard to train and write the bundle.")


def render(report, out) -> None:
    """The build report: pools, embeddings, the training jobs, timings, the bundle's use."""
    from rich.table import Table

    pools = ", ".join(f"{n} {m}" for m, n in report.pools.items())
    out.print(f"[bold]{report.expression}[/]  pools: {pools}")
    out.print(f"embeddings: {report.encoded} encoded, {report.reused} reused from the cache "
              f"({report.cache_dir})")
    print_skipped(out, report.skipped, "unreadable pool item(s)")
    table = Table(title="training jobs")
    for col, just in (("job", "left"), ("bond", "left"), ("source → target", "left"),
                      ("projectors", "right"), ("tuples", "right"), ("epochs", "right"),
                      ("best val loss", "right"), ("seconds", "right")):
        table.add_column(col, justify=just)
    for j in report.jobs:
        table.add_row(j.id, f"{j.bond} {j.kind}", f"{j.source} → {j.target}",
                      str(len(j.modes)), str(j.tuples), str(j.epochs), f"{j.val_loss:.4f}",
                      f"{j.seconds:.1f}" + (" (reused)" if j.cached else ""))
    print_table(out, table)
    print_workers(report.engine, out)
    out.print(f"total {report.seconds.get('total', 0):.1f} s "
              f"(embedding {report.seconds.get('embed', 0):.1f} s)")
    if report.output:
        path = report.output
        out.print(f"\n[bold green]bundle written:[/] {path}")
        out.print("use it:")
        for command in closing_hints(report.expression, path):
            print_command(out, f"  {command}")


def closing_hints(expression: str, path: str) -> list[str]:
    """The commands the build suggests next (printed whole, never wrapped)."""
    from freebind.algebra import plan as make_plan
    from freebind.util.vocab import is_mini_only

    hints = [f"freebind info {path}",
             f"freebind embed {path} FILES_OR_FOLDERS... -o embeddings/"]
    if is_mini_only([s["family"] for s in make_plan(expression).spaces.values()]):
        hints.append("freebind eval --suite audiocaps --suite coco     "
                     "# this bundle, on the mini evaluation sets")
    else:
        hints.append("freebind eval --suite audiocaps     "
                     "# this bundle, on $FREEBIND_DATA/audiocaps")
    hints.append(f"python -c \"import freebind; s = freebind.load('{path}'); "
                 f"print(s.encode('text', ['a dog barks']).shape)\"")
    return hints


def register(app: typer.Typer) -> None:
    app.command("build")(build)
