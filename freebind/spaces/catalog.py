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
