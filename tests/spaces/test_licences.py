"""Licences of the spaces' weights, as recorded in model cards: per family, per open_clip tag
(MetaCLIP is CC-BY-NC-4.0), from a transformers model's own card, and ``unknown`` (a card
licence of ``other``) for anything not known, never freebind's MIT by default."""

from __future__ import annotations

import json

from freebind.share.push import _licence, card_license
from freebind.spaces.licences import UNKNOWN, licence_of, licence_of_ref
from freebind.spaces.protocol import SpaceInfo


def oc(tag):
    return SpaceInfo("x", "open_clip", ("image", "text"), 512,
                     options=(("arch", "ViT-B-32"), ("tag", tag)))


def test_per_family_and_tag():
    assert licence_of(oc("metaclip_400m")) == "CC-BY-NC-4.0"
    assert licence_of(oc("metaclip_fullcc")) == "CC-BY-NC-4.0"
    assert licence_of(oc("laion2b_s34b_b79k")) == "MIT"
    assert licence_of(oc("openai")) == "MIT"
    assert licence_of(oc("some_new_tag")) == UNKNOWN
    assert licence_of(SpaceInfo("y", "imagebind", ("audio",), 4)) == "CC-BY-NC-4.0"
    assert licence_of(SpaceInfo("y", "newfamily", ("audio",), 4)) == UNKNOWN
    assert licence_of(SpaceInfo("y", "newfamily", ("audio",), 4, licence="Apache-2.0")) \
        == "Apache-2.0"
    assert licence_of_ref("CLIP-B32") == "MIT"
    assert licence_of_ref("no_such:space", "clap") == "CC0-1.0"
    assert licence_of_ref("no_such:space", "who") == UNKNOWN


def test_a_transformers_model_card_licence_reaches_the_bundle_card(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": 16}))
    (folder / "README.md").write_text("---\nlicense: cc-by-nc-4.0\ntags:\n- clip\n---\n# m\n")
    ref = f"transformers:{folder}"
    spaces = {"mini:bind": {"family": "mini"}, ref: {"family": "transformers"}}
    assert card_license(spaces) == "cc-by-nc-4.0"
    (folder / "README.md").write_text("# no front matter\n")
    assert card_license(spaces) == "other"
    assert card_license({"mini:bind": {"family": "mini"}}) == "mit"
    assert _licence("x:y", {"family": "somebody"}) == "unknown"
    assert card_license({"mini:bind": {"family": "mini"}, "x:y": {"family": "who"}}) == "other"
