"""LAION-CLAP's own model code as the tests' reference (the ``laion_clap`` package, installed
``--no-deps`` by scripts/setup.sh; freebind itself never imports it).

:func:`build_model` builds an untrained LAION-CLAP model of a given architecture with
laion_clap's code (RoBERTa text tower built offline from a configuration; an optional small
HTSAT), whose ``get_audio_embedding``/``get_text_embedding`` freebind's CLAP must equal."""

from __future__ import annotations

import contextlib
import copy
import sys

from freebind.spaces import clap, compat


@contextlib.contextmanager
def _offline_roberta(model_module, config: dict):
    """Make ``RobertaModel.from_pretrained('roberta-base')`` inside laion_clap build the
    architecture from ``config`` (the checkpoint supplies every weight)."""
    from transformers import RobertaConfig, RobertaModel

    class _Builder:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return RobertaModel(RobertaConfig(**config))

    original = model_module.RobertaModel
    model_module.RobertaModel = _Builder
    try:
        yield
    finally:
        model_module.RobertaModel = original


@contextlib.contextmanager
def _small_htsat(model_module, htsat: dict | None):
    """Build the audio tower with HTSAT_Swin_Transformer arguments ``htsat`` (embed_dim,
    depths, num_heads) instead of one of laion_clap's three fixed sizes; None: unchanged."""
    if htsat is None:
        yield
        return
    htsat_module = sys.modules["laion_clap.clap_module.htsat"]

    def create(audio_cfg, enable_fusion=False, fusion_type="None"):
        return htsat_module.HTSAT_Swin_Transformer(
            spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=audio_cfg.class_num,
            window_size=8, config=audio_cfg, enable_fusion=enable_fusion,
            fusion_type=fusion_type, **htsat)

    original = model_module.create_htsat_model
    model_module.create_htsat_model = create
    try:
        yield
    finally:
        model_module.create_htsat_model = original


def build_model(amodel: str, fusion: bool, fusion_type: str = "aff_2d",
                text_config: dict | None = None, htsat: dict | None = None):
    """An untrained LAION-CLAP model (laion_clap's code) and its model config."""
    cm = compat.import_bare("laion_clap", "laion_clap.clap_module", "clap", "laion-clap")
    model_module = sys.modules["laion_clap.clap_module.model"]
    factory = sys.modules["laion_clap.clap_module.factory"]
    cfg = copy.deepcopy(factory._MODEL_CONFIGS[amodel])
    cfg["text_cfg"]["model_type"] = "roberta"
    cfg["enable_fusion"] = bool(fusion)
    cfg["fusion_type"] = fusion_type if fusion else "None"
    if htsat is not None:
        cfg["embed_dim"] = int(htsat["embed_dim"]) * 8  # the tower's output width
    with _offline_roberta(model_module, {**clap.ROBERTA_BASE, **(text_config or {})}), \
            _small_htsat(model_module, htsat):
        model = cm.CLAP(**cfg)
    return model, cfg
