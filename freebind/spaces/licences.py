"""The licence of each space's weights, as their publishers state it (model cards record it,
:mod:`freebind.share.push`).

A registry entry may carry its own (:attr:`SpaceInfo.licence`: a ``transformers:`` model's
card, a plugin's entry); otherwise the family decides, and for ``open_clip`` the pretrained
tag does (MetaCLIP's weights are CC-BY-NC-4.0, OpenAI's and LAION's MIT). A family or tag
that is not known here is :data:`UNKNOWN`, never freebind's own MIT.
"""

from __future__ import annotations

UNKNOWN = "unknown"
#: families whose every weight file has one licence (SPDX identifiers)
FAMILY = {
    "imagebind": "CC-BY-NC-4.0",
    "internvl": "MIT",
    "clap": "CC0-1.0",
    "minilm": "Apache-2.0",
    "msclap": "MS-PL",   # microsoft/msclap's card (the msclap package's code is MIT)
    "languagebind": "MIT",  # the LanguageBind/* Hub cards and PKU-YuanGroup/LanguageBind
    "mini": "MIT",
}
#: open_clip pretrained tags, by prefix (first match wins)
OPEN_CLIP_TAGS = (
    ("metaclip", "CC-BY-NC-4.0"),
    ("openai", "MIT"),
    ("laion", "MIT"),
    ("datacomp", "MIT"),
    ("commonpool", "MIT"),
    ("webli", "Apache-2.0"),
)
#: licences that forbid commercial use (a card holding one is non-commercial)
NON_COMMERCIAL = ("CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-NC-2.0")


def open_clip_licence(tag: str | None) -> str:
    tag = (tag or "").lower()
    for prefix, licence in OPEN_CLIP_TAGS:
        if tag.startswith(prefix):
            return licence
    return UNKNOWN


def licence_of(info) -> str:
    """The licence of a registry entry (:class:`~freebind.spaces.protocol.SpaceInfo`)."""
    if getattr(info, "licence", ""):
        return str(info.licence)
    family = getattr(info, "family", "")
    if family == "open_clip":
        return open_clip_licence(dict(info.options).get("tag"))
    return FAMILY.get(family, UNKNOWN)


def licence_of_ref(ref: str, family: str = "") -> str:
    """The licence of the space ``ref`` names (its registry entry, resolved without
    weights), else of its ``family``; :data:`UNKNOWN` when neither says."""
    from freebind import spaces

    try:
        return licence_of(spaces.info(ref))
    except Exception:  # not resolvable here (a plugin not installed, a folder elsewhere)
        return FAMILY.get(family, UNKNOWN)


def is_non_commercial(licence: str) -> bool:
    return licence.upper() in NON_COMMERCIAL or "-NC" in licence.upper()
