"""Share a bundle on the Hugging Face Hub: a repository folder with the bundle and a model
card generated from it, uploaded with ``huggingface_hub`` (``freebind push``).

The folder holds ``fused.safetensors`` (the name ``hf:ORG/NAME`` references resolve by
default, :mod:`freebind.run.hub_refs`) and ``README.md``: YAML front matter the Hub reads
(``library_name``, ``license``, ``tags``, ``pipeline_tag``), then the expression, every
space with its reference and licence, the bonds' factors and presets, the training data's
fingerprints, the evaluation results stored in the bundle, and how to use the space from
the CLI and from Python.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from freebind.util.errors import UsageError
from freebind.util.text import first_line

REPO_FILE = "fused.safetensors"


@dataclass
class PushReport:
    repo_id: str
    folder: str
    files: list[str]
    uploaded: bool = False
    url: str | None = None
    private: bool = False
    #: base spaces named by a local path: whoever downloads the bundle needs those files too
    local_spaces: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _md(text) -> str:
    """A table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(_md(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def _licence(ref: str, meta: dict) -> str:
    """The licence of a space's weights (:mod:`freebind.spaces.licences`: its registry
    entry, else its family; ``unknown`` when neither says, never MIT by default)."""
    from freebind.spaces.licences import licence_of_ref

    return licence_of_ref(ref, str(meta.get("family", "")))


def card_license(spaces: dict) -> str:
    """The card's ``license``: the most restrictive of the spaces' (non-commercial wins),
    ``other`` when a space's licence is unknown, ``mit`` (freebind's own) otherwise."""
    from freebind.spaces.licences import UNKNOWN, is_non_commercial

    found = {_licence(r, m) for r, m in spaces.items()}
    if any(is_non_commercial(x) for x in found):
        return "cc-by-nc-4.0"
    if UNKNOWN in found:
        return "other"
    return "mit"


def _bond_rows(graph: dict) -> list[list]:
    from freebind.fusion.factors import bond_nodes

    rows = []
    for b in bond_nodes(graph):
        factors = ", ".join(f"{m}={v:g}" for m, v in sorted(b.get("factors", {}).items()))
        rows.append([f"`{b['id']}`", "combination" if b["kind"] == "c" else "displacement",
                     ", ".join(f"`{e['text']}`" for e in b["experts"]),
                     factors or "-", b.get("route", "fixed") or "fixed"])
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def model_card(meta: dict, repo_id: str, *, license: str | None = None) -> str:  # noqa: A002
    """The README.md model card of a bundle's metadata
    (:func:`freebind.fusion.bundle.read_metadata`) published as ``repo_id``."""
    plan = meta.get("plan", {})
    graph = plan.get("graph", {})
    expression = meta.get("expression", plan.get("expression", "?"))
    spaces = meta.get("spaces") or plan.get("spaces", {})
    modalities = list(graph.get("modalities", []))
    ref = f"hf:{repo_id}"
    lines = ["---", "library_name: freebind",
             f"license: {license or card_license(spaces)}",
             "pipeline_tag: feature-extraction", "tags:",
             *[f"- {t}" for t in ("freebind", "multimodal", "embeddings", "space-bonds",
                                  *modalities)],
             "---", "", f"# {repo_id}", "",
             f"A fused multimodal embedding space built with freebind (space bonds, "
             f"FreeBind): `{expression}`.", "",
             *_table(["dimension", "modalities", "format"],
                     [[graph.get("dim", "?"), ", ".join(modalities),
                       f"freebind bundle v{meta.get('format_version', '?')} "
                       f"(freebind {meta.get('freebind_version', '?')})"]]),
             "", "## Spaces", "",
             "The encoders are not in this repository: each space is loaded from its own "
             "reference (`freebind download REF` fetches real weights ahead of time).", "",
             *_table(["space", "family", "dim", "modalities", "licence", "fingerprint"],
                     [[f"`{r}`", m.get("family", ""), m.get("dim", ""),
                       ", ".join(m.get("modalities", [])), _licence(r, m),
                       f"`{m.get('fingerprint', '-')}`"] for r, m in sorted(spaces.items())]),
             "", "## Bonds and presets", "",
             *_table(["bond", "kind", "experts", "factors", "route"], _bond_rows(graph)), "",
             "Factors are applied at inference time (customised inference): pick a preset "
             f"(`{ref}@main@PRESET`) or set factors (`--factor a=0.8`).", "",
             *_table(["preset", "factors"],
                     [[f"`{name}`", " ".join(specs) or "(the expression's factors)"]
                      for name, specs in meta.get("presets", {}).items()])]
    data = meta.get("data") or {}
    lines += ["", "## Training data", ""]
    if data:
        lines += ["Projectors were trained on unpaired unimodal pools; the fingerprint "
                  "identifies each pool's content.", "",
                  *_table(["modality", "items", "fingerprint"],
                          [[m, d.get("items", ""), f"`{d.get('fingerprint', '')}`"]
                           for m, d in sorted(data.items())])]
    else:
        lines += ["The bundle records no training data (converted or untrained projectors)."]
    evaluation = meta.get("evaluation") or {}
    lines += ["", "## Evaluation", ""]
    if evaluation:
        for dataset, settings in sorted(evaluation.items()):
            metrics = sorted({k for e in settings.values() for k in e.get("metrics", {})})
            lines += [f"### {dataset}", "",
                      *_table(["setting", *metrics],
                              [[s, *[_fmt(e.get("metrics", {}).get(k, "-")) for k in metrics]]
                               for s, e in sorted(settings.items())]), ""]
        lines.pop()
    else:
        lines += [f"No results are stored in the bundle yet (`freebind eval {ref}` "
                  f"measures them)."]
    text_or = "text" if "text" in modalities else (modalities[0] if modalities else "text")
    example = '["a dog barking"]' if text_or == "text" else '["item.wav"]'
    lines += ["", "## Use", "", "From the command line:", "", "```bash",
              "pip install 'freebind[hub]'", f"freebind info {ref}",
              f"freebind embed {ref} media/ -o embeddings/",
              f"freebind eval {ref}@main@{_first_preset(meta)} --suite audiocaps",
              f"freebind api {ref}       # an OpenAI-compatible /v1/embeddings endpoint",
              "```", "", "From Python:", "", "```python", "import freebind", "",
              f'space = freebind.open("{ref}")',
              f'rows = space.encode("{text_or}", {example})   # [1, {graph.get("dim", "dim")}]'
              f', unit rows',
              "```", "",
              f"`{ref}` accepts a revision, a file and a preset: "
              f"`hf:{repo_id}@REVISION:{REPO_FILE}@PRESET`.", ""]
    return "\n".join(lines)


def _first_preset(meta: dict) -> str:
    presets = [p for p in meta.get("presets", {}) if p != "default"]
    return presets[0] if presets else "default"


def write_repo(bundle, repo_id: str, folder, *, license: str | None = None  # noqa: A002
               ) -> PushReport:
    """Write the repository folder of ``bundle`` for ``repo_id`` into ``folder`` (created;
    its files replaced atomically). Raises :class:`UsageError` for a bad repo id."""
    from freebind.fusion import bundle as bundle_io
    from freebind.util.atomic import atomic_write, atomic_write_text
    from freebind.run.hub_refs import _REPO_RE

    if not _REPO_RE.match(repo_id or ""):
        raise UsageError(f"{repo_id!r}: a repository is named ORG/NAME")
    path = Path(os.fspath(bundle))
    meta = bundle_io.read_metadata(path)        # a clear error for a non-bundle
    bundle_io.load(path, required=[])           # and for a truncated one
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / REPO_FILE, lambda tmp: shutil.copyfile(path, tmp))
    atomic_write_text(folder / "README.md", model_card(meta, repo_id, license=license))
    spaces = meta.get("spaces") or meta.get("plan", {}).get("spaces", {})
    local = [r for r in sorted(spaces) if _is_local_ref(r)]
    return PushReport(repo_id, str(folder), [REPO_FILE, "README.md"], local_spaces=local)


def _is_local_ref(ref: str) -> bool:
    """A space named by a file on this machine (``bundle:PATH``, ``clap:/path.pt``, a bare
    ``x.safetensors``) that people downloading the bundle will not have."""
    prefix, sep, spec = ref.partition(":")
    if prefix == "hf":
        return False
    spec = (spec if sep else ref).split("@")[0]
    return spec.endswith((".safetensors", ".pt", ".pth", ".ckpt", ".bin")) \
        or "/" in spec and Path(spec).exists()


def push(bundle, repo_id: str, *, private: bool = False, dry_run=None, token=None,
         license: str | None = None, commit_message: str | None = None  # noqa: A002
         ) -> PushReport:
    """Publish ``bundle`` as the model repository ``repo_id``: write its folder (into
    ``dry_run`` and stop there, or a temporary folder) and upload it with huggingface_hub
    (the repository is created when missing, ``private`` if asked)."""
    import tempfile

    from freebind.util.errors import SpaceError
    from freebind.spaces.weights import offline

    if dry_run is not None:
        report = write_repo(bundle, repo_id, dry_run, license=license)
        report.private = private
        return report
    if offline():
        raise SpaceError(f"push {repo_id}: downloads and uploads are off "
                         f"(HF_HUB_OFFLINE/FREEBIND_OFFLINE); use --dry-run DIR to write the "
                         f"folder only")
    from freebind.run.hub_refs import _hub

    lib = _hub()
    from huggingface_hub import errors

    with tempfile.TemporaryDirectory(prefix="freebind-push-") as tmp:
        report = write_repo(bundle, repo_id, tmp, license=license)
        api = lib.HfApi(token=token, library_name="freebind")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                     commit_message=commit_message
                                     or f"freebind push {Path(os.fspath(bundle)).name}")
        except errors.HfHubHTTPError as exc:
            raise SpaceError(f"push {repo_id}: the Hub refused ({first_line(exc)}); log in "
                             f"with `hf auth login` or pass a token with write access") from None
        except OSError as exc:
            raise SpaceError(f"push {repo_id}: cannot reach the Hub ({first_line(exc)})"
                             ) from None
    report.folder = None
    report.uploaded, report.private = True, private
    report.url = str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")
    return report
