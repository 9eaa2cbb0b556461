"""LanguageBind's own code as the tests' reference (the ``languagebind`` package, installed
``--no-deps`` by scripts/setup.sh; freebind never imports it).

The package's ``__init__`` imports every tower at once (and with the video processor decord),
so its modules are imported below a bare package object (the installed folder as its path, its
``__init__`` not run): ``languagebind.<tower>.modeling_<tower>`` (LoRA through peft, transformers'
CLIP modules), ``configuration_<tower>``, ``tokenization_<tower>`` and
``processing_<tower>`` (the transforms and file loaders, cv2 reading depth files)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

CLASS = {"image": "Image", "depth": "Depth", "thermal": "Thermal", "audio": "Audio",
         "video": "Video"}


def module(tower: str, part: str):
    """``languagebind.<tower>.<part>_<tower>`` without running ``languagebind/__init__``."""
    from freebind.spaces import compat

    compat.torchvision_if_present()
    if "languagebind" not in sys.modules:
        spec = importlib.util.find_spec("languagebind")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("languagebind is not installed (scripts/setup.sh installs it "
                              "--no-deps)")
        pkg = types.ModuleType("languagebind")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["languagebind"] = pkg
    return importlib.import_module(f"languagebind.{tower}.{part}_{tower}")


def build(tower: str, text: dict, vision: dict, projection_dim: int):
    """``LanguageBind<Tower>`` from its own config class (LoRA wrapped by peft when
    ``vision['lora_r'] > 0``), eval mode."""
    cfg_cls = getattr(module(tower, "configuration"), f"LanguageBind{CLASS[tower]}Config")
    model_cls = getattr(module(tower, "modeling"), f"LanguageBind{CLASS[tower]}")
    cfg = cfg_cls(text_config=text, vision_config=vision, projection_dim=projection_dim)
    return model_cls(cfg).eval(), cfg


def transform(tower: str, config):
    """The tower processor's file → pixel tensor function (``get_<tower>_transform`` and
    ``load_and_transform_<tower>`` of ``processing_<tower>``)."""
    proc = module(tower, "processing")
    tf = getattr(proc, f"get_{tower}_transform")(config)
    load = getattr(proc, f"load_and_transform_{tower}")
    return lambda path: load(str(path), tf)


def tokenizer(tower: str, folder):
    cls = getattr(module(tower, "tokenization"), f"LanguageBind{CLASS[tower]}Tokenizer")
    return cls.from_pretrained(str(folder))
