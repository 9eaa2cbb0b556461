"""Hugging Face Hub references: ``hf:ORG/NAME[@REVISION][:FILE][@preset]``.

A hub reference names a bundle kept in a model repository on the Hub. It goes wherever a
target or an expert goes: ``freebind.open("hf:org/name")``, every verb, and expressions
(``mini:bind + c(hf:org/name)``). The parts:

* ``ORG/NAME`` — the repository (a model repo);
* ``@REVISION`` — a branch, tag or commit right after the name (default ``main``), as in
  the Hub's own ``org/name@revision`` notation;
* ``:FILE`` — the bundle's path in the repository (default :data:`DEFAULT_FILE`, the name
  ``freebind push`` gives it);
* ``@preset`` — one of the bundle's stored presets, last. Without ``:FILE`` a preset needs
  the revision before it: ``hf:org/name@main@versatile`` (a single ``@`` after the name is
  always the revision).

Files are resolved with ``huggingface_hub`` into its own cache (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``), offline-first: a file already cached at that revision is used
without any network access; only a missing file is downloaded, and not at all when
``HF_HUB_OFFLINE``/``FREEBIND_OFFLINE`` is set (then a missing file is one error naming the
repository, the file and the revision). ``freebind download hf:org/name`` fetches the
newest commit of a branch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from freebind.util.errors import SpaceError, UsageError
from freebind.util.text import first_line

PREFIX = "hf:"
#: the bundle's file name in a repository written by ``freebind push``
DEFAULT_FILE = "fused.safetensors"
DEFAULT_REVISION = "main"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PART_RE = re.compile(r"^[A-Za-z0-9_.\-/]+$")
SYNTAX = "hf:ORG/NAME[@REVISION][:FILE][@preset]"


def is_hub_ref(ref) -> bool:
    """Whether ``ref`` is a hub reference (``hf:…``)."""
    return isinstance(ref, str) and ref.startswith(PREFIX)


@dataclass(frozen=True)
class HubRef:
    """A parsed hub reference."""

    repo_id: str
    revision: str | None = None
    filename: str = DEFAULT_FILE
    preset: str | None = None

    @property
    def text(self) -> str:
        """The canonical reference (defaults left out)."""
        out = PREFIX + self.repo_id
        if self.revision:
            out += f"@{self.revision}"
        if self.filename != DEFAULT_FILE:
            out += f":{self.filename}"
        if self.preset:
            out += ("" if self.revision or self.filename != DEFAULT_FILE
                    else f"@{DEFAULT_REVISION}") + f"@{self.preset}"
        return out

    @property
    def bundle_ref(self) -> str:
        """The reference without its preset (what names the bundle file)."""
        return HubRef(self.repo_id, self.revision, self.filename).text

    def describe(self) -> str:
        return (f"{self.filename} of {self.repo_id} at revision "
                f"{self.revision or DEFAULT_REVISION}")


def parse(ref: str) -> HubRef:
    """Parse ``hf:ORG/NAME[@REVISION][:FILE][@preset]``; raises :class:`UsageError`."""
    if not is_hub_ref(ref):
        raise UsageError(f"{ref}: not a hub reference ({SYNTAX})")
    rest = ref[len(PREFIX):]
    head, has_file, tail = rest.partition(":")
    pieces = head.split("@")
    repo = pieces[0]
    revision = preset = None
    filename = DEFAULT_FILE
    if has_file:
        if len(pieces) > 2:
            raise UsageError(f"{ref}: one @REVISION before :FILE at most ({SYNTAX})")
        revision = pieces[1] if len(pieces) == 2 else None
        filename, at, preset = tail.partition("@")
        if at and not preset:
            raise UsageError(f"{ref}: empty preset after '@' ({SYNTAX})")
        preset = preset or None
        if "@" in (preset or ""):
            raise UsageError(f"{ref}: one @preset after :FILE at most ({SYNTAX})")
    else:
        if len(pieces) > 3:
            raise UsageError(f"{ref}: too many '@' ({SYNTAX})")
        revision = pieces[1] if len(pieces) >= 2 else None
        preset = pieces[2] if len(pieces) == 3 else None
        if len(pieces) == 3 and not preset:
            raise UsageError(f"{ref}: empty preset after '@' ({SYNTAX})")
    if not _REPO_RE.match(repo):
        raise UsageError(f"{ref}: {repo!r} is not a repository name ORG/NAME ({SYNTAX})")
    if revision is not None and not _PART_RE.match(revision):
        raise UsageError(f"{ref}: {revision!r} is not a revision (branch, tag or commit)")
    if not filename or not _PART_RE.match(filename) or filename.startswith("/") \
            or ".." in filename.split("/"):
        raise UsageError(f"{ref}: {filename!r} is not a file path in the repository")
    return HubRef(repo, revision or None, filename, preset)


def hub_cache() -> Path:
    """huggingface_hub's cache folder, read from the environment at call time
    (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _hub():
    from freebind.util.optional import require

    return require("huggingface_hub", "the Hugging Face Hub (hf: references, push)",
                   install="'freebind[hub]'")


def resolve(ref: str | HubRef, *, refresh: bool = False) -> Path:
    """The local path of the bundle file ``ref`` names, from the cache when it is there
    (``refresh=True``: ask the Hub for the revision's newest commit first, as
    ``freebind download`` does). Raises :class:`SpaceError` in one line."""
    from freebind.spaces.weights import offline

    hub = ref if isinstance(ref, HubRef) else parse(ref)
    lib = _hub()
    from huggingface_hub import errors

    kwargs = dict(repo_id=hub.repo_id, filename=hub.filename,
                  revision=hub.revision or DEFAULT_REVISION, cache_dir=str(hub_cache()),
                  library_name="freebind", library_version=_version())
    where = f"{PREFIX}{hub.repo_id}: {hub.describe()}"
    if not refresh or offline():
        try:
            return Path(lib.hf_hub_download(**kwargs, local_files_only=True))
        except errors.LocalEntryNotFoundError:
            _refuse_model_repo(lib, hub)
            if offline():
                raise SpaceError(f"{where} is not in the Hugging Face cache ({hub_cache()}) "
                                 f"and downloads are off (HF_HUB_OFFLINE/FREEBIND_OFFLINE); "
                                 f"run `freebind download {hub.bundle_ref}` online") from None
        except (errors.HFValidationError, ValueError) as exc:
            raise SpaceError(f"{where}: {first_line(exc)}") from None
    try:
        return Path(lib.hf_hub_download(**kwargs))
    except errors.RepositoryNotFoundError:
        raise SpaceError(f"{PREFIX}{hub.repo_id}: no such repository on the Hub (or it is "
                         f"private: log in with `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise SpaceError(f"{where}: the repository has no revision "
                         f"{hub.revision or DEFAULT_REVISION!r} (a preset right after the "
                         f"name needs a revision first: {PREFIX}{hub.repo_id}@main@PRESET)"
                         ) from None
    except errors.EntryNotFoundError:
        _refuse_model_repo(lib, hub, online=True)
        raise SpaceError(f"{where}: the repository has no such file") from None
    except errors.LocalEntryNotFoundError as exc:
        raise SpaceError(f"{where}: not cached and the Hub cannot be reached "
                         f"({first_line(exc)})") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise SpaceError(f"{where}: download failed ({first_line(exc)})") from None


def _refuse_model_repo(lib, hub: HubRef, online: bool = False) -> None:
    """A repository holding a transformers model (its config.json cached, or found on the
    Hub when ``online``) is not a bundle: say so and name the reference that binds it
    (``transformers:ORG/NAME``)."""
    try:
        lib.hf_hub_download(repo_id=hub.repo_id, filename="config.json",
                            revision=hub.revision or DEFAULT_REVISION,
                            cache_dir=str(hub_cache()), local_files_only=not online)
    except Exception:  # not cached: nothing known about the repository
        return
    raise SpaceError(f"{PREFIX}{hub.repo_id} is a transformers model repository (config.json, "
                     f"no {hub.filename}), not a freebind bundle; bind the model as "
                     f"transformers:{hub.repo_id}")


def split(ref: str) -> tuple[str, str | None]:
    """``(local bundle path, preset)`` of a hub reference (resolving the file)."""
    hub = parse(ref)
    return str(resolve(hub)), hub.preset


# --- the ``hf`` family of the space registry (experts in expressions) --------------------
# (its resolver is freebind.run.targets:resolve_hub_family, beside the bundle family's)

def fetch_entry(info) -> list[Path]:
    """``freebind download hf:…``: the newest commit of the bundle's revision, then every
    file its base spaces need (their own fetchers), so the bundle runs offline after."""
    from freebind import spaces
    from freebind.fusion.bundle import read_metadata

    path = resolve(info.name, refresh=True)
    meta = read_metadata(path)
    files = [path]
    for ref in sorted(meta.get("spaces") or meta.get("plan", {}).get("spaces", {})):
        files += [Path(f) for f in spaces.prefetch(ref)]
    return files


def _version() -> str:
    from freebind.util.version import __version__

    return __version__
