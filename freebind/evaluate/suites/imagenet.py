"""ImageNet-1k validation: zero-shot image classification, acc1/acc5.

Layout: the validation images sorted into synset folders (``val/n01440764/*.JPEG``, …) at
DIR/val, DIR/ILSVRC2012_img_val or DIR itself. The candidate classes (WordNet ids in
class-index order) are ``classes=FILE`` (``wnid<TAB>name`` lines) when given, else the
``LOC_synset_mapping.txt`` in DIR (the Kaggle/devkit file), else the 1,000 ImageNet-1k synsets
shipped with freebind. Their prompt names are, first found: ``classnames.tsv`` /
``classnames.txt`` in DIR (one name per line in class-index order, or ``wnid<TAB>name``);
``names=open_clip`` (open_clip's curated names); CLIP's curated names shipped with freebind
for the ImageNet-1k synsets; the first synonym of ``LOC_synset_mapping.txt`` otherwise.
Prompts: CLIP's 80 templates (``templates=openai``, default), its 7-template subset
(``templates=simple``) or a file of templates. Every class of the list is a candidate,
also when the folder holds images of only some of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from freebind.evaluate.suites.tasks import (
    ClassificationTask, EvalSet, SuiteError, data_file, find_dir, read_templates,
)
from freebind.util.vocab import IMAGE_EXTENSIONS


def read_classes(path: Path) -> list[tuple[str, str]]:
    """``wnid<TAB>name`` (or ``wnid name, synonym, …`` as in ``LOC_synset_mapping.txt``, whose
    first synonym is the name) per line."""
    out = []
    for n, line in _lines(path):
        parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
        if len(parts) != 2 or not parts[1].strip() or not _WNID.match(parts[0]):
            raise SuiteError(f"{path}: line {n} is not '<wnid> <name>'")
        name = parts[1].strip() if "\t" in line else parts[1].split(",")[0].strip()
        out.append((parts[0].strip(), name))
    if not out:
        raise SuiteError(f"{path}: no classes")
    return out


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read class names ({exc.strerror})") from None
    return [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)
            if ln.strip() and not ln.startswith("#")]


def read_names(path: Path, wnids: list[str]) -> list[str]:
    """Class names for ``wnids`` from a file of one name per line (in class-index order) or
    of ``wnid<TAB>name`` lines."""
    lines = [ln for _, ln in _lines(path)]
    if lines and all("\t" in ln and _WNID.match(ln.split("\t", 1)[0]) for ln in lines):
        named = dict(read_classes(path))
        absent = [w for w in wnids if w not in named]
        if absent:
            raise SuiteError(f"{path}: no name for {', '.join(absent[:5])}")
        return [named[w] for w in wnids]
    if len(lines) != len(wnids):
        raise SuiteError(f"{path}: {len(lines)} names for {len(wnids)} classes")
    return lines


_WNID = re.compile(r"^n\d{8}$")


def _open_clip_names() -> list[str]:
    try:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        raise SuiteError(f"names=open_clip: open_clip is not importable here ({exc})") from None
    return list(IMAGENET_CLASSNAMES)


def class_list(root: Path, classes: str | None, names: str | None) -> tuple[list, str]:
    """``([(wnid, name)], note)``: the candidate classes in class-index order."""
    if classes:
        path = Path(classes) if Path(classes).is_absolute() else root / classes
        return read_classes(path), f"classes from {path.name}"
    shipped = read_classes(data_file("imagenet_classes.tsv"))
    loc = root / "LOC_synset_mapping.txt"
    if loc.is_file():
        listed = read_classes(loc)
        if [w for w, _ in listed] == [w for w, _ in shipped]:
            out, note = shipped, "ImageNet-1k synsets (LOC_synset_mapping.txt), CLIP's names"
        else:
            out, note = listed, "classes from LOC_synset_mapping.txt"
    else:
        out, note = shipped, "ImageNet-1k classes shipped with freebind (CLIP's curated names)"
    wnids = [w for w, _ in out]
    for fname in ("classnames.tsv", "classnames.txt"):
        if (root / fname).is_file():
            names_ = read_names(root / fname, wnids)
            return list(zip(wnids, names_)), f"{note}; names from {fname}"
    if names == "open_clip":
        oc = _open_clip_names()
        if len(oc) != len(out) or out is not shipped:
            raise SuiteError("names=open_clip needs the 1,000 ImageNet-1k classes")
        return list(zip(wnids, oc)), "ImageNet-1k synsets, names from open_clip"
    return out, note


def load(root: Path, classes: str | None = None, names: str | None = None,
         templates: str | None = None) -> EvalSet:
    root = Path(root)
    val = find_dir(root, ["val", "ILSVRC2012_img_val", "."], "ImageNet validation")
    candidates, note = class_list(root, classes, names)
    if names not in (None, "", "open_clip", "shipped"):
        raise SuiteError(f"names={names!r}: expected open_clip or shipped")
    index = {w: i for i, (w, _) in enumerate(candidates)}
    if len(index) != len(candidates):
        raise SuiteError("the class list names a WordNet id twice")
    folders = sorted(p for p in val.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name not in index]
    if unknown:
        raise SuiteError(f"{val}: folder(s) {', '.join(unknown[:5])} are not classes of the "
                         "class list (pass classes=FILE)")
    items, labels = [], []
    for folder in folders:
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                items.append(str(p))
                labels.append(index[folder.name])
    if not items:
        raise SuiteError(f"{val}: no images in synset folders")
    if templates in (None, "", "openai"):
        tmpl = read_templates(data_file("imagenet_templates.txt"))
    elif templates == "simple":
        tmpl = read_templates(data_file("imagenet_templates_simple.txt"))
    else:
        tmpl = read_templates(templates)
    task = ClassificationTask("image", items, [n for _, n in candidates], tmpl,
                              np.asarray(labels, dtype=np.int64))
    notes = [note, f"{len(folders)} of {len(candidates)} classes have images"]
    return EvalSet("imagenet", root, [task], listed=len(items), missing=[], notes=notes)
