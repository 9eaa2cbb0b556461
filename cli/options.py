"""The options several verbs share, declared once: flag groups (a dataclass of flags that a
command takes as one parameter, see :func:`with_flag_groups`), :class:`SpaceFlags`
(``--device``, ``--precision``, ``--space-option``) and one-flag helpers (``--json``,
``--quiet``, ``--cache-dir``, ``--batch-size``, ``--factor``, ``--preset``, ``--data``,
``--suite``, ``--option``)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import parse_space_options

CACHE_HELP = "Embedding cache (default $FREEBIND_HOME/cache)."


def flag(default, *names: str, **click):
    """A field of a flag group: the flag ``names`` with its ``default`` and help."""
    return dataclasses.field(metadata={"option": typer.Option(default, *names, **click)})


class FlagGroup:
    """Base of the flag groups: a frozen dataclass whose fields are made with :func:`flag`.
    A command parameter annotated with a group becomes one option per field."""

    @classmethod
    def parameters(cls, kind) -> list[inspect.Parameter]:
        types = typing.get_type_hints(cls)
        return [inspect.Parameter(f.name, kind, default=f.metadata["option"],
                                  annotation=types[f.name]) for f in dataclasses.fields(cls)]

    @classmethod
    def take(cls, values: dict):
        """The group made of its flags' values, removed from ``values``."""
        return cls(**{f.name: values.pop(f.name) for f in dataclasses.fields(cls)})


def with_flag_groups(command):
    """``command`` as typer should see it: each parameter annotated with a
    :class:`FlagGroup` is spread into one parameter per flag (so ``--help`` lists each
    where the parameter stands), and the command receives the group whole."""
    hints = typing.get_type_hints(command)
    groups = {name: kind for name, kind in hints.items()
              if isinstance(kind, type) and issubclass(kind, FlagGroup)}
    params = []
    for p in inspect.signature(command).parameters.values():
        if p.name in groups:
            params += groups[p.name].parameters(p.kind)
        else:
            params.append(p.replace(annotation=hints.get(p.name, p.annotation)))

    @functools.wraps(command)
    def spread(**values):
        for name, group in groups.items():
            values[name] = group.take(values)
        return command(**values)

    spread.__signature__ = inspect.Signature(params, return_annotation=None)
    spread.__annotations__ = {p.name: p.annotation for p in params}
    return spread


@dataclasses.dataclass(frozen=True)
class SpaceFlags(FlagGroup):
    """How the spaces load, for every verb that encodes or opens a target."""

    device: Optional[str] = flag(None, "--device", metavar="DEVICE",
                                 help="Device the encoders run on (cpu, cuda, cuda:1, …; "
                                      "default $FREEBIND_DEVICE, else CUDA when available).")
    precision: Optional[str] = flag(None, "--precision", metavar="fp32|fp16|bf16",
                                    help="Encoder precision (default $FREEBIND_PRECISION, "
                                         "else the space's own; fp16 needs a GPU).")
    space_option: List[str] = flag([], "--space-option", metavar="KEY=VALUE",
                                   help="Loader option for the spaces (checkpoint=PATH, "
                                        "trust_remote_code=true, workers=4, …); repeatable.")

    def parse(self) -> dict:
        """The options for ``freebind.spaces.get`` (:func:`parse_space_options`), once the
        device and precision are known to be on this machine (before any work)."""
        from freebind.fusion.devices import check_device_and_precision

        options = parse_space_options(self.device, self.precision, self.space_option)
        check_device_and_precision(options.get("device"), options.get("precision"),
                                   names={"device": "--device", "precision": "--precision"})
        return options


def json_option(what: str):
    """``--json``: print ``what`` as JSON instead of tables."""
    return typer.Option(False, "--json", help=f"Print {what} as JSON.")


def quiet_option(bars: str = "bars"):
    return typer.Option(False, "--quiet", "-q", help=f"No progress {bars}.")


def cache_dir_option(help: str = CACHE_HELP):  # noqa: A002
    return typer.Option(None, "--cache-dir", help=help)


def batch_size_option(default: int = 64,
                      help: str = "Items per encoder batch."):  # noqa: A002
    """``--batch-size``: at least 1."""
    return typer.Option(default, "--batch-size", min=1, help=help)


def factor_option(help: str, short: bool = True):  # noqa: A002
    return typer.Option([], "--factor", *(("-f",) if short else ()), help=help)


def preset_option(help: str, short: bool = True):  # noqa: A002
    return typer.Option(None, "--preset", *(("-p",) if short else ()), help=help)


def suite_option(help: str):  # noqa: A002
    return typer.Option(..., "--suite", "-s", help=help)


def data_option(default_help: str):
    return typer.Option([], "--data", "-d", help="Dataset folder (one per suite, or one root "
                                                 "with a folder per suite); default "
                                                 f"$FREEBIND_DATA/<suite>, or {default_help}.")


def suite_loader_option(examples: str):
    """``--option KEY=VALUE``; ``examples`` ends the help."""
    return typer.Option([], "--option", help=f"Suite loader option KEY=VALUE {examples}")


@dataclasses.dataclass(frozen=True)
class AccessFlags(FlagGroup):
    """Who may use a server (``freebind api``, ``freebind serve``): API keys, and whether
    ``/health`` and ``/metrics`` answer without one."""

    api_key: List[str] = flag([], "--api-key", metavar="KEY",
                              help="A key clients must send (Authorization: Bearer KEY; the "
                                   "search page asks for it once); repeatable. Also "
                                   "$FREEBIND_API_KEY and --api-key-file, which keep it out "
                                   "of the process list.")
    api_key_file: Optional[Path] = flag(None, "--api-key-file", metavar="FILE",
                                        help="A file of keys, one a line.")
    no_auth: bool = flag(False, "--no-auth", help="Listen on a non-loopback address "
                                                  "without a key, on purpose.")
    public_health: bool = flag(False, "--public-health", help="Answer GET /health and GET "
                                                              "/metrics without a key.")

    def keys(self) -> list[str]:
        """Every key given (checked; a bad key file is a UsageError)."""
        from freebind.serve.auth import gather_keys

        return gather_keys(self.api_key, self.api_key_file)


#: the metavar of a value by its Python type (typer would print ``<list[str]>``, ``<int
#: range>``): what a user types, never a Python type name
_METAVARS = {int: "N", float: "NUMBER", str: "TEXT"}
#: the help of an option that a verb declared without one
_SHARED_HELP = {"--port": "TCP port to listen on.", "--batch-size": "Items per encoder batch."}


def name_metavars(command) -> None:
    """Give each option and argument of ``command`` without a metavar a plain one: ``N``,
    ``NUMBER``, ``TEXT``, ``PATH`` (a list's element's; its help says it repeats), or the
    argument's own name in capitals."""
    from pathlib import Path

    for param in getattr(command, "params", ()):
        if not getattr(param, "help", None) and getattr(param, "opts", None):
            param.help = next((_SHARED_HELP[o] for o in param.opts if o in _SHARED_HELP), None)
        if getattr(param, "min", None) is not None or getattr(param, "max", None) is not None:
            param._get_number_range_help_str = functools.partial(_range_words, param)
        if getattr(param, "param_type_name", "") == "argument":
            param.display_type_rich = lambda ctx: None
            if param.metavar is None:
                param.metavar = (param.name or "value").upper() + (
                    "..." if param.nargs != 1 else "")
            continue
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        desc = getattr(param, "type_descriptor", None)
        annotation = getattr(desc, "annotation", None)
        args = typing.get_args(annotation)
        element = args[0] if typing.get_origin(annotation) is list and args else annotation
        if isinstance(element, type) and issubclass(element, Path):
            param.metavar = "PATH"
        else:
            param.metavar = _METAVARS.get(element, "VALUE")


def _range_words(param) -> str:
    """``at least 1``, ``at most 5``, ``1 to 5`` (click writes ``x>=1``)."""
    lo, hi = param.min, param.max
    if lo is not None and hi is not None:
        return f"{lo} to {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


#: What each path a verb takes must be, checked while the command line is parsed (so
#: before any work): ``file``/``folder`` must exist and be one; ``exists`` must exist;
#: ``folder-out`` is a folder to write (an existing file is refused), ``file-out`` a file to
#: write (an existing folder is refused), ``bundle`` a ``.safetensors`` file to write,
#: ``cache`` a folder that need not exist yet, ``template-out`` a file name template (with
#: ``{fields}``) or else a folder to write. Keyed by verb, then flag (an argument: its
#: parameter name).
PATH_KINDS: dict[str, dict[str, str]] = {
    "build": {"--output": "bundle", "--cache-dir": "cache", "--pools": "exists"},
    "embed": {"--output": "folder-out", "--texts": "file", "--cache-dir": "cache"},
    "import": {"source": "exists", "--ids": "file", "--texts": "file", "--cache-dir": "cache"},
    "eval": {"--data": "exists", "--output": "template-out", "--cache-dir": "cache"},
    "tune": {"--data": "exists", "--output": "folder-out", "--cache-dir": "cache"},
    "index": {"embed_dirs": "folder", "--output": "folder-out", "--cache-dir": "cache",
              "--captions": "file"},
    "search": {"--texts": "file"},
    "serve": {"--api-key-file": "file"},
    "api": {"--api-key-file": "file"},
    "convert": {"release": "folder", "--output": "bundle"},
    "push": {"bundle": "file", "--dry-run": "folder-out"},
    "export": {"--output": "file-out"},
    "mini pools": {"directory": "folder-out"},
    "mini evalsets": {"directory": "folder-out"},
}


def check_path_kinds(verb: str, command) -> None:
    """Attach :data:`PATH_KINDS`' checks of ``verb`` to ``command``'s parameters, and
    :data:`VALUE_CHECKS` to the flags it names."""
    kinds = PATH_KINDS.get(verb, {})
    for param in getattr(command, "params", ()):
        if param.callback is not None:
            continue
        kind = next((kinds[o] for o in (*param.opts, param.name) if o in kinds), None)
        check = next((VALUE_CHECKS[o] for o in param.opts if o in VALUE_CHECKS
                      and (verb, o) not in OWN_CHECKS), None)
        if kind:
            param.callback = functools.partial(_check_path_param, kind)
        elif check and getattr(param, "param_type_name", "") == "option":
            param.callback = functools.partial(_check_values, check)


def _check_values(check, ctx, param, value):
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if v is not None:
            check(param.opts[0], str(v))
    return value


def _check_factor(flag: str, value: str) -> None:
    from freebind.fusion.factors import parse_override

    parse_override(value)


def _check_modality(flag: str, value: str) -> None:
    from freebind.util.errors import UsageError
    from freebind.util.vocab import ALL_MODALITIES

    if value.strip().lower() not in ALL_MODALITIES:
        raise UsageError(f"{flag} {value}: unknown modality; use one of "
                         f"{', '.join(ALL_MODALITIES)}")


def _check_suite(flag: str, value: str) -> None:
    from freebind.evaluate.suites import info

    info(value)


def _check_grid(flag: str, value: str) -> None:
    from freebind.evaluate.entrypoints import parse_grids

    parse_grids([value])


def _check_key_value(flag: str, value: str) -> None:
    from freebind.util.vocab import parse_key_values

    if flag == "--option":
        parse_key_values([value], "--option", convert=False, allow_empty=True,
                         example="split=val")
    else:
        parse_key_values([value], what=flag)


#: flags a verb checks itself (the mini world has its own evaluation sets)
OWN_CHECKS = {("mini evalsets", "--suite")}
#: checks of a flag's values made while the command line is parsed, in every verb
VALUE_CHECKS = {"--option": _check_key_value, "--space-option": _check_key_value,
                "--factor": _check_factor, "--modality": _check_modality,
                "--as": _check_modality, "--suite": _check_suite, "--grid": _check_grid}


def _check_path_param(kind: str, ctx, param, value):
    values = value if isinstance(value, (list, tuple)) else [value]
    flag = param.opts[0] if getattr(param, "param_type_name", "") == "option" else \
        (param.metavar or param.name.upper())
    for v in values:
        if v is not None and str(v) != "":
            check_path(v, kind, flag)
    return value


def check_path(value, kind: str, flag: str) -> None:
    """Raise a one-line UsageError when ``value`` is not the ``kind`` of path (see
    :data:`PATH_KINDS`) that ``flag`` wants."""
    from pathlib import Path

    from freebind.util.errors import UsageError

    path = Path(value)
    where = f"{flag} {value}"
    if kind == "template-out":
        if "{" in str(value) or "=" in str(value):  # a template; KEY=VALUE: see its own check
            return
        kind = "folder-out"
    if kind in ("file", "folder", "exists") and not path.exists():
        dangling = " (a dangling symbolic link)" if path.is_symlink() else ""
        raise UsageError(f"{where}: no such {'file or folder' if kind == 'exists' else kind}"
                         f"{dangling}")
    if kind == "file" and path.is_dir():
        raise UsageError(f"{where}: is a folder, not a file")
    if kind in ("folder", "folder-out", "cache") and path.exists() and not path.is_dir():
        raise UsageError(f"{where}: is a file, not a folder"
                         + ("" if kind == "folder" else "; name a new or an existing folder"))
    if kind in ("file-out", "bundle") and path.is_dir():
        raise UsageError(f"{where}: is a folder, not a file; name the file to write"
                         + (" (NAME.safetensors)" if kind == "bundle" else ""))
    if kind == "bundle" and path.suffix.lower() != ".safetensors":
        named = path.with_suffix(".safetensors") if path.suffix else f"{path}.safetensors"
        raise UsageError(f"{where}: a bundle is a .safetensors file; name it {named}")
