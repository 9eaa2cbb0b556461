"""Where real encoders' weights come from, and how they are loaded safely.

Resolution order for every weight file (docs/real-spaces.md):

1. an explicit path given by the user (``checkpoint=...``); it must exist;
2. ``$FREEBIND_HOME/weights/<family>/<file>`` (FREEBIND_HOME defaults to ``~/.cache/freebind``);
3. the encoder library's own cache (the Hugging Face cache, open_clip's cache, ...);
4. a download into ``$FREEBIND_HOME/weights/<family>/`` when downloads are allowed and the
   machine is online. Nothing is ever written into the current directory or site-packages.

When every step fails the user gets one :class:`SpaceError` line naming the file, where it
comes from and where to put it. Checkpoints are read with ``torch.load(weights_only=True)``
(or safetensors), never by unpickling arbitrary objects.

This layer knows no family: each family's registry entry names how its weights are fetched
(:attr:`freebind.spaces.protocol.SpaceInfo.fetcher`, see :mod:`freebind.spaces.fetch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from freebind.util.progress import bar
from freebind.util.errors import SpaceError

#: Environment variables that forbid network access for weights.
OFFLINE_VARS = ("FREEBIND_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def freebind_home() -> Path:
    """``$FREEBIND_HOME`` or ``~/.cache/freebind``."""
    env = os.environ.get("FREEBIND_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "freebind"


def weights_dir(family: str) -> Path:
    """The folder freebind keeps (and downloads) ``family``'s weights in."""
    return freebind_home() / "weights" / family


def offline() -> bool:
    """True when an environment variable forbids downloads."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in OFFLINE_VARS)


@dataclass
class WeightFile:
    """One file a space needs: its name, family folder, origin, and how to fetch it.

    ``library_paths`` are candidate paths in the encoder library's own cache (checked, never
    written); ``fetch(dest_dir) -> Path`` downloads into ``dest_dir`` (None: no download)."""

    filename: str
    family: str
    origin: str
    library_paths: Callable[[], Iterable[Path]] | None = None
    fetch: Callable[[Path], Path] | None = None
    what: str = "checkpoint"
    extra: dict = field(default_factory=dict)

    @property
    def home_path(self) -> Path:
        return weights_dir(self.family) / self.filename

    def candidates(self) -> list[Path]:
        """Local places the file may already be, in resolution order (no network)."""
        paths = [self.home_path]
        if self.library_paths is not None:
            try:
                paths.extend(Path(p) for p in self.library_paths() if p)
            except Exception:  # a library cache probe must never break resolution
                pass
        return paths

    def find_local(self) -> Path | None:
        for path in self.candidates():
            if path.exists():
                return path
        return None

    def missing_message(self, reason: str = "") -> str:
        why = f" ({reason})" if reason else ""
        return (f"{self.what} {self.filename} not found{why}; it comes from {self.origin}; "
                f"put it at {self.home_path} (or set FREEBIND_HOME, or pass its path with "
                f"checkpoint=...), or run `freebind download` on a machine that is online")


def resolve(weight: WeightFile, explicit: str | os.PathLike | None = None,
            download: bool = True) -> Path:
    """The local path of ``weight``: explicit → FREEBIND_HOME → library cache → download."""
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if path.exists():
            return path
        # a bare file name is looked up like the default one
        if path.name == str(explicit):
            named = WeightFile(path.name, weight.family, weight.origin, weight.library_paths,
                               weight.fetch, weight.what)
            found = named.find_local()
            if found is not None:
                return found
            weight = named
        else:
            raise SpaceError(f"{weight.what} {path} does not exist (given explicitly); "
                             f"it comes from {weight.origin}")
    found = weight.find_local()
    if found is not None:
        return found
    if not download or weight.fetch is None:
        raise SpaceError(weight.missing_message("downloads disabled" if not download else ""))
    if offline():
        raise SpaceError(weight.missing_message(
            "offline: " + "/".join(v for v in OFFLINE_VARS if os.environ.get(v)) + " is set"))
    host = getattr(weight.fetch, "host", None)
    if host and not reachable(host, getattr(weight.fetch, "port", 443)):
        raise SpaceError(weight.missing_message(f"offline: cannot reach {host}"))
    dest = weight.home_path.parent
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return weight.fetch(dest)
    except SpaceError:
        raise
    except Exception as exc:  # network errors of every library
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpaceError(weight.missing_message(f"download failed: {reason[:160]}")) from None


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` resolves and accepts a TCP connection (a quick offline probe, so an
    offline machine fails in seconds instead of after a library's retry loop)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_url(url: str, dest: Path, progress: bool = True, timeout: float = 30.0) -> Path:
    """Stream ``url`` to ``dest`` atomically (``.part`` file, then ``os.replace``)."""
    import urllib.request

    from freebind.util.atomic import atomic_write

    dest = Path(dest)

    def stream(tmp):
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with bar(total=total, unit="B", unit_scale=True, desc=dest.name,
                     disable=not progress) as pbar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    pbar.update(len(chunk))

    return atomic_write(dest, stream, suffix=".part")


def hf_cached(repo_ids: Iterable[str], filename: str) -> list[Path]:
    """Paths of ``filename`` in the Hugging Face cache for any of ``repo_ids`` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    found = []
    for repo in repo_ids:
        try:
            hit = try_to_load_from_cache(repo_id=repo, filename=filename)
        except Exception:
            continue
        if isinstance(hit, str):
            found.append(Path(hit))
    return found


def one_folder(paths: Iterable[Path], prefix: str) -> Path:
    """A folder holding every file of ``paths`` by name: their own folder when they share
    one, else a temporary folder (``prefix``) of links to them (Hugging Face's cache keeps
    each file of a repository in its own snapshot folder only by link, while a processor
    or tokenizer loads from one folder)."""
    paths = list(paths)
    if len({p.parent for p in paths}) == 1:
        return paths[0].parent
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())
    return folder


def hf_fetch(repo_id: str, filename: str) -> Callable[[Path], Path]:
    """A fetcher downloading ``filename`` of ``repo_id`` into freebind's folder."""

    def fetch(dest: Path) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_dir=str(dest)))

    fetch.host = "huggingface.co"
    return fetch


def url_fetch(url: str, filename: str) -> Callable[[Path], Path]:
    def fetch(dest: Path) -> Path:
        return download_url(url, dest / filename)

    from urllib.parse import urlparse

    parsed = urlparse(url)
    fetch.host = parsed.hostname
    fetch.port = parsed.port or (80 if parsed.scheme == "http" else 443)
    return fetch


def load_state_dict(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """Read a checkpoint's tensors safely: safetensors, or ``torch.load(weights_only=True)``.

    A ``state_dict``/``model``/``module`` wrapper is unwrapped; numpy scalars that training
    scripts leave in checkpoints are allowed (they carry no code)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise unreadable(path, what, exc) from None
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise unreadable(path, what, exc) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise SpaceError(f"{path}: {what} holds a {type(obj).__name__}, not a state dict")
    return obj


def unreadable(path: Path, what: str, exc: BaseException) -> SpaceError:
    """The error for a weights file that cannot be read: empty, truncated or damaged files
    are to be downloaded again; a file holding more than tensors is refused. Never suggests
    loading unsafely (torch's own hint to re-run with ``weights_only=False`` is dropped)."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = None
    if size == 0:
        return SpaceError(f"{path}: {what} file is empty (0 bytes): delete it and download it "
                          f"again (`freebind download SPACE`)")
    text = str(exc).replace("WeightsUnpickler error:", "\n")
    # torch's own advice (re-run with weights_only=False, read the docs) is never repeated
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(
        k in ln for k in ("weights_only", "Re-running", "Weights only load failed",
                          "Check the documentation", "two options"))]
    lines = [ln.lstrip("(0123456789) ").strip() for ln in lines] or [type(exc).__name__]
    objects = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
    if objects is not None:
        detail = objects.split(" was not", 1)[0].split(" whose module", 1)[0][:160]
        return SpaceError(f"{path}: {what} holds Python objects, not only tensors ({detail}); "
                          f"freebind reads tensors only: use the official file (`freebind "
                          f"download SPACE`) or save the state dict as safetensors")
    reason = lines[0].split(". ", 1)[0][:160]
    if type(exc).__name__ not in reason:
        reason = f"{type(exc).__name__}: {reason}"
    return SpaceError(f"{path}: cannot read {what}, the file is damaged or incomplete "
                      f"({reason}): delete it and download it again (`freebind download "
                      f"SPACE`)")


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    """Remove a DataParallel-style prefix from every key that has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(module, state: dict, path, ignore: Iterable[str] = (),
              assign: bool = False) -> None:
    """``module.load_state_dict(state, strict=True)`` with one clear error line on mismatch.

    Keys listed in ``ignore`` (buffers some library versions have and others lack) are
    dropped from both sides' comparison. ``assign=True`` makes the checkpoint's tensors the
    module's (no copy; for a module built on the meta device)."""
    ignore = set(ignore)
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not (k in ignore and k not in own)}
    missing = [k for k in own if k not in state and k not in ignore]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise SpaceError(f"{path}: checkpoint does not match the architecture: "
                         + ", ".join(parts))
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise SpaceError(f"{path}: checkpoint does not match the architecture: {k} has shape "
                         f"{tuple(state[k].shape)}, expected {tuple(own[k].shape)}")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False,
                           assign=assign)


def file_digest(path: str | os.PathLike, head: int = 1 << 20) -> str:
    """A cheap identity of a weight file: size plus a hash of its first and last MiB."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(head))
        if size > 2 * head:
            f.seek(size - head)
            h.update(f.read(head))
    return h.hexdigest()[:16]


def package_available(*names: str) -> tuple[bool, str]:
    """Whether every module in ``names`` is importable (``find_spec``; nothing is imported)."""
    import importlib.util

    missing = []
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return (not missing, ", ".join(missing))


def _numpy_safe_globals() -> list:
    try:
        import numpy as np

        out = [np.dtype, np.ndarray]
        try:
            from numpy.core.multiarray import scalar  # numpy < 2 layout, still importable
        except Exception:
            scalar = None
        try:
            from numpy._core.multiarray import scalar as scalar2
        except Exception:
            scalar2 = None
        for s in (scalar, scalar2):
            if s is not None:
                out.append(s)
        out.extend(type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool"))
        return out
    except Exception:
        return []
