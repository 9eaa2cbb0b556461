"""ImageNet-1k validation: zero-shot image classification, acc1/acc5.

Layout: the validation images sorted into synset folders (``val/n01440764/*.JPEG``, …) at
DIR/val, DIR/ILSVRC2012_img_val or DIR itself. Classes (WordNet id and prompt name, in
class-index order) come from, first found: ``classes=FILE``; ``classnames.tsv`` /
``classnames.txt`` in DIR (``wnid<TAB>name`` per line); with ``names=open_clip`` open_clip's
curated names; otherwise the list shipped with freebind (the 1,000 ImageNet synsets with CLIP's
curated names). Prompts: CLIP's 80 templates (``templates=openai``, default), its 7-template
subset (``templates=simple``) or a file of templates. Every class of the list is a candidate,
also when the folder holds images of only some of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freebind.evaluate.suites.base import (
    ClassificationTask, EvalSet, SuiteError, data_file, find_dir, read_templates,
)
from freebind.media import IMAGE_EXTENSIONS


def read_classes(path: Path) -> list[tuple[str, str]]:
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read class names ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t", 1) if "\t" in line else line.strip().split(None, 1)
        if len(parts) != 2 or not parts[1].strip():
            raise SuiteError(f"{path}: line {n} is not '<wnid><TAB><name>'")
        out.append((parts[0].strip(), parts[1].strip()))
    if not out:
        raise SuiteError(f"{path}: no classes")
    return out


def _open_clip_names() -> list[str]:
    try:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        raise SuiteError(f"names=open_clip: open_clip is not importable here ({exc})") from None
    return list(IMAGENET_CLASSNAMES)


def load(root: Path, classes: str | None = None, names: str | None = None,
         templates: str | None = None) -> EvalSet:
    root = Path(root)
    val = find_dir(root, ["val", "ILSVRC2012_img_val", "."], "ImageNet validation")
    note = ""
    if classes:
        cls_path = Path(classes) if Path(classes).is_absolute() else root / classes
        class_list = read_classes(cls_path)
        note = f"classes from {cls_path.name}"
    else:
        local = [root / n for n in ("classnames.tsv", "classnames.txt") if (root / n).is_file()]
        if local:
            class_list = read_classes(local[0])
            note = f"classes from {local[0].name}"
        else:
            class_list = read_classes(data_file("imagenet_classes.tsv"))
            note = "ImageNet-1k classes shipped with freebind (CLIP's curated names)"
            if names == "open_clip":
                oc = _open_clip_names()
                if len(oc) != len(class_list):
                    raise SuiteError(f"open_clip lists {len(oc)} ImageNet names, expected "
                                     f"{len(class_list)}")
                class_list = [(w, n) for (w, _), n in zip(class_list, oc)]
                note = "ImageNet-1k synsets, names from open_clip"
    if names not in (None, "", "open_clip", "shipped"):
        raise SuiteError(f"names={names!r}: expected open_clip or shipped")
    index = {w: i for i, (w, _) in enumerate(class_list)}
    if len(index) != len(class_list):
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
    task = ClassificationTask("image", items, [n for _, n in class_list], tmpl,
                              np.asarray(labels, dtype=np.int64))
    notes = [note, f"{len(folders)} of {len(class_list)} classes have images"]
    return EvalSet("imagenet", root, [task], listed=len(items), missing=[], notes=notes)
