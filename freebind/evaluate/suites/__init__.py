"""Evaluation suites: one loader per dataset, reading the layout the dataset is published in.

``load_suite(name, data_dir, **options)`` returns an :class:`EvalSet`; ``SUITES`` describes
each suite (task, modalities, headline metric) for help texts and tables.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from freebind.evaluate.suites.tasks import (
    ClassificationTask, EvalSet, RetrievalTask, SuiteError,
)


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    task: str
    modalities: tuple[str, ...]
    headline: tuple[str, ...]      # the metrics a summary table shows
    description: str
    loader: str                    # "module:function", imported on use
    options: tuple[str, ...] = ()  # keyword options the loader takes
    layout: str = ""               # the folder layout the loader reads, in one line


_M = "freebind.evaluate.suites."
SUITES: dict[str, SuiteInfo] = {s.name: s for s in (
    SuiteInfo("audiocaps", "retrieval", ("audio", "text"), ("t2a_R@1", "a2t_R@1"),
              "AudioCaps test: audio-text retrieval", _M + "audiocaps:load", ("split",),
              "test.csv (audiocap_id,youtube_id,start_time,caption) + audio/<youtube_id>.wav"),
    SuiteInfo("clotho", "retrieval", ("audio", "text"), ("t2a_R@1", "a2t_R@1"),
              "Clotho evaluation: audio-text retrieval", _M + "clotho:load", ("split",),
              "clotho_captions_evaluation.csv (file_name,caption_1..caption_5) + "
              "evaluation/<file_name>"),
    SuiteInfo("esc50", "zeroshot_classification", ("audio", "text"), ("acc1",),
              "ESC-50: zero-shot sound classification", _M + "esc50:load",
              ("templates", "folds"),
              "meta/esc50.csv (filename,fold,target,category,...) + audio/<filename>"),
    SuiteInfo("audioset", "multilabel_classification", ("audio", "text"), ("mAP",),
              "AudioSet eval: zero-shot multi-label classification", _M + "audioset:load",
              ("segments", "templates"),
              "eval_segments.csv + class_labels_indices.csv + audio/<YTID>.wav"),
    SuiteInfo("vggss", "retrieval", ("audio", "image"), ("a2i_R@1", "i2a_R@1"),
              "VGG-SS: audio-image retrieval", _M + "audio_image:load_vggss", ("manifest",),
              "vggss.json or vggss_test.csv (ids) + audio/<id>.wav + frames/<id>.jpg"),
    SuiteInfo("flickrnet", "retrieval", ("audio", "image"), ("a2i_R@1", "i2a_R@1"),
              "Flickr-SoundNet: audio-image retrieval", _M + "audio_image:load_flickrnet",
              ("manifest",),
              "flickrnet.json or flickr_test.csv (ids) + audio/<id>.wav + frames/<id>.jpg"),
    SuiteInfo("coco", "retrieval", ("image", "text"), ("t2i_R@1", "i2t_R@1"),
              "COCO Karpathy 5k test: image-text retrieval", _M + "karpathy:load_coco",
              ("split",),
              "dataset_coco.json (Karpathy splits) + val2014/<filename>"),
    SuiteInfo("flickr30k", "retrieval", ("image", "text"), ("t2i_R@1", "i2t_R@1"),
              "Flickr30k Karpathy 1k test: image-text retrieval", _M + "karpathy:load_flickr30k",
              ("split",),
              "dataset_flickr30k.json (Karpathy splits) + flickr30k-images/<filename>"),
    SuiteInfo("imagenet", "zeroshot_classification", ("image", "text"), ("acc1",),
              "ImageNet-1k val: zero-shot image classification", _M + "imagenet:load",
              ("classes", "names", "templates"),
              "val/<wnid>/*.JPEG (one folder per synset)"),
    SuiteInfo("modelnet40", "zeroshot_classification", ("point", "text"), ("acc1",),
              "ModelNet40 test: zero-shot 3D shape classification (40 classes)",
              _M + "shapes3d:load_modelnet40", ("templates", "split"),
              "modelnet40_shape_names.txt + test_split.json + test_pc.npy (OpenShape/Uni3D), "
              "or <class>/test/*.off (Princeton)"),
    SuiteInfo("objaverse-lvis", "zeroshot_classification", ("point", "text"), ("acc1",),
              "Objaverse-LVIS test: zero-shot 3D shape classification (1,156 categories)",
              _M + "shapes3d:load_objaverse_lvis", ("templates",),
              "lvis_testset.txt (cate_id,cate_name,model_id,point_path) + the clouds"),
    SuiteInfo("cap3d", "retrieval", ("point", "text", "image"), ("t2p_R@1", "p2t_R@1"),
              "Cap3D: point-text and point-image retrieval", _M + "shapes3d:load_cap3d",
              ("manifest",),
              "Cap3D_automated_Objaverse.csv (uid,caption) + points/<uid>.* + images/<uid>.png"),
    SuiteInfo("pairs", "retrieval", ("audio", "image", "text"), (),
              "custom CSV manifest: retrieval between its columns", _M + "pairs:load",
              ("manifest",),
              "a CSV manifest with audio/image/text columns (manifest=FILE)"),
)}


def names() -> list[str]:
    return list(SUITES)


def info(name: str) -> SuiteInfo:
    if name not in SUITES:
        raise SuiteError(f"unknown suite {name!r} (known: {', '.join(SUITES)})")
    return SUITES[name]


def load_suite(name: str, data: str | Path, **options) -> EvalSet:
    """Load suite ``name`` from the dataset folder ``data``; ``options`` go to its loader."""
    si = info(name)
    bad = [k for k in options if k not in si.options]
    if bad:
        raise SuiteError(f"suite {name}: unknown option(s) {', '.join(bad)} "
                         f"(accepted: {', '.join(si.options) or 'none'})")
    module, _, func = si.loader.partition(":")
    return getattr(importlib.import_module(module), func)(Path(data), **options)


__all__ = ["SUITES", "SuiteInfo", "SuiteError", "EvalSet", "RetrievalTask",
           "ClassificationTask", "names", "info", "load_suite"]
