"""Uni3D's point encoder (freebind's own) against timm's EVA blocks (the library the
released models' transformers come from) at random-weight tiny configurations, loaded key
for key from checkpoints laid out as Uni3D saves them; FPS and grouping on hand-computed
clouds; the space end to end with a tiny open_clip model as its image-text towers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from real_helpers import require_packages

require_packages("torch", "timm")
import torch  # noqa: E402

from freebind.data.points import load_points, ply_bytes  # noqa: E402
from freebind.util.errors import MediaError, SpaceError  # noqa: E402
from freebind.spaces import compat  # noqa: E402
from freebind.spaces.families import uni3d, uni3d_model as M  # noqa: E402

KINDS = {   # timm Eva options of each MLP kind the released models use
    "gelu": dict(mlp_ratio=3.0),                                       # giant
    "glu": dict(mlp_ratio=8 / 3, swiglu_mlp=True, use_rot_pos_emb=True),   # tiny, small
    "swiglu": dict(mlp_ratio=8 / 3, swiglu_mlp=True, scale_mlp=True, qkv_fused=False,
                   use_rot_pos_emb=True),                              # base, large
    "gelu+ls": dict(mlp_ratio=2.0, init_values=0.5),
}
SIZES = dict(num_group=16, group_size=8, npoints=200)


def _eva(kind: str):
    compat.import_torchvision()
    from timm.models.eva import Eva

    torch.manual_seed(1)
    vit = Eva(img_size=28, patch_size=14, embed_dim=48, depth=2, num_heads=3, num_classes=5,
              **KINDS[kind]).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return vit


def _checkpoint(tmp_path, vit, encoder_dim=40, embed_dim=24):
    """A checkpoint as Uni3D writes it: {"module": {"module.point_encoder....": tensor}}."""
    torch.manual_seed(2)
    cfg = M.config_from_state({
        "point_encoder.cls_token": torch.zeros(1, 1, 48),
        **{f"point_encoder.visual.{k}": v for k, v in vit.state_dict().items()},
        "point_encoder.encoder.second_conv.3.weight": torch.zeros(encoder_dim, 512, 1),
        "point_encoder.trans2embed.weight": torch.zeros(embed_dim, 48)}, heads=3)
    model = M.Uni3D(cfg)
    state = {}
    for k, v in model.state_dict().items():
        if ".visual." not in k and v.is_floating_point():
            v = torch.randn_like(v) * 0.2 if "running_var" not in k else torch.rand_like(v) + .5
        state[k] = v
    for k, v in vit.state_dict().items():
        state[f"point_encoder.visual.{k}"] = v
    path = tmp_path / "model.pt"
    torch.save({"module": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return path, state


def _reference(state, vit, pc, sizes=SIZES):
    """The forward pass by hand from the checkpoint's tensors, the blocks by timm."""
    p = "point_encoder."
    xyz, rgb = pc[..., :3], pc[..., 3:]
    centres, feats = M.group(xyz, rgb, sizes["num_group"], sizes["group_size"])

    def conv(x, i, which):
        w, b = state[f"{p}encoder.{which}.{i}.weight"], state[f"{p}encoder.{which}.{i}.bias"]
        return x @ w[:, :, 0].T + b

    def bn(x, which):
        s = {k: state[f"{p}encoder.{which}.1.{k}"] for k in
             ("weight", "bias", "running_mean", "running_var")}
        return (x - s["running_mean"]) / torch.sqrt(s["running_var"] + 1e-5) * s["weight"] \
            + s["bias"]

    f = conv(torch.relu(bn(conv(feats, 0, "first_conv"), "first_conv")), 3, "first_conv")
    f = torch.cat([f.amax(dim=2, keepdim=True).expand_as(f), f], dim=-1)
    f = conv(torch.relu(bn(conv(f, 0, "second_conv"), "second_conv")), 3, "second_conv")
    tokens = f.amax(dim=2) @ state[p + "encoder2trans.weight"].T + state[p + "encoder2trans.bias"]
    pos = torch.nn.functional.gelu(centres @ state[p + "pos_embed.0.weight"].T
                                   + state[p + "pos_embed.0.bias"])
    pos = pos @ state[p + "pos_embed.2.weight"].T + state[p + "pos_embed.2.bias"]
    b = pc.shape[0]
    x = torch.cat([state[p + "cls_token"].expand(b, -1, -1), tokens], 1) + torch.cat(
        [state[p + "cls_pos"].expand(b, -1, -1), pos], 1)
    for blk in vit.blocks:
        x = blk(x)
    x = vit.fc_norm(vit.norm(x[:, 0]))
    return x @ state[p + "trans2embed.weight"].T + state[p + "trans2embed.bias"]


def _cloud(b=2, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    pc = torch.rand(b, n, 6, generator=g)
    pc[..., :3] = pc[..., :3] * 2 - 1
    return pc


@pytest.mark.parametrize("kind", list(KINDS))
def test_checkpoint_loads_key_for_key_and_matches(tmp_path, kind):
    vit = _eva(kind)
    path, state = _checkpoint(tmp_path, vit)
    model = uni3d.load_point_model(path, heads=3, **SIZES)
    cfg = model.point_encoder.cfg
    assert cfg.mlp == kind.split("+")[0] and cfg.layer_scale == kind.endswith("+ls")
    assert cfg.qkv_fused == (kind != "swiglu") and cfg.depth == 2 and cfg.heads == 3
    used = set(model.state_dict())
    skipped = {k for k in state if k not in used}
    assert skipped == {k for k in state if k.startswith(M.UNUSED_PREFIXES)
                       or k in M.UNUSED_KEYS}      # only the ViT's image-only parts
    assert "point_encoder.visual.patch_embed.proj.weight" in skipped
    pc = _cloud()
    with torch.no_grad():
        got, ref = model.encode_pc(pc), _reference(state, vit, pc)
    assert got.shape == (2, 24)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_mismatched_checkpoints_are_refused(tmp_path):
    vit = _eva("gelu")
    path, state = _checkpoint(tmp_path, vit)
    sd = torch.load(path, weights_only=True)["module"]
    del sd["module.point_encoder.visual.blocks.1.mlp.fc2.weight"]
    torch.save(sd, tmp_path / "cut.pt")
    with pytest.raises(SpaceError, match="missing.*blocks.1.mlp.fc2.weight"):
        uni3d.load_point_model(tmp_path / "cut.pt", heads=3)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(SpaceError, match="not a Uni3D checkpoint"):
        uni3d.load_point_model(tmp_path / "other.pt")
    sd = {k: v for k, v in torch.load(path, weights_only=True)["module"].items()}
    sd["module.point_encoder.surplus"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pt")
    with pytest.raises(SpaceError, match="unexpected.*surplus"):
        uni3d.load_point_model(tmp_path / "extra.pt", heads=3)


def test_fps_hand_computed_and_the_origin_rule():
    pts = torch.tensor([[[1.0, 0, 0], [0.01, 0, 0], [0.5, 0, 0], [-1, 0, 0]]])
    # from point 0 the farthest is 3 (distance 4); then min distances: 1 -> .98, 2 -> .25;
    # point 1 lies within sqrt(1e-3) of the origin, so the CUDA rule picks 2
    assert M.farthest_point_sample(pts, 3).tolist() == [[0, 3, 2]]
    assert M.farthest_point_sample(pts, 3, skip_origin=False).tolist() == [[0, 3, 1]]


def test_group_hand_computed():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1.5, 0, 0], [3, 0, 0], [3.5, 0, 0]]])
    rgb = torch.arange(15, dtype=torch.float32).reshape(1, 5, 3)
    centres, feats = M.group(xyz, rgb, 2, 2)
    assert centres.tolist() == [[[0, 0, 0], [3.5, 0, 0]]]     # point 0, then the farthest
    # each centre's 2 nearest points, xyz relative to it, then their colours
    assert sorted(map(tuple, feats[0, 1].tolist())) == [(-0.5, 0, 0, 9, 10, 11),
                                                         (0, 0, 0, 12, 13, 14)]
    assert sorted(map(tuple, feats[0, 0].tolist())) == [(0, 0, 0, 0, 1, 2), (1, 0, 0, 3, 4, 5)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouping_on_gpu_equals_cpu():
    pc = _cloud(b=3, n=2000, seed=4)
    a = M.group(pc[..., :3], pc[..., 3:], 64, 16)
    b = M.group(pc[..., :3].cuda(), pc[..., 3:].cuda(), 64, 16)
    torch.testing.assert_close(a[0], b[0].cpu())
    torch.testing.assert_close(a[1].sort(dim=2).values, b[1].cpu().sort(dim=2).values)


TINY_CLIP = {"embed_dim": 24,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                            "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                          "heads": 2, "layers": 1}}


def test_space_end_to_end(tmp_path):
    require_packages("open_clip", "ftfy", "regex")
    open_clip = compat.require("open_clip", "open_clip")
    (tmp_path / "fbtest-uni3d-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(tmp_path / "fbtest-uni3d-clip.json"))
    torch.manual_seed(0)
    clip = open_clip.create_model("fbtest-uni3d-clip", pretrained=None).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in clip.state_dict().items()},
              str(tmp_path / "clip.safetensors"))
    vit = _eva("glu")
    path, state = _checkpoint(tmp_path, vit)
    rng = np.random.default_rng(0)
    files = []
    for i, n in enumerate((500, 150)):
        f = tmp_path / f"s{i}.ply"
        f.write_bytes(ply_bytes(rng.normal(size=(n, 3)), rng.random((n, 3)) if i else None))
        files.append(f)
    import freebind.spaces as spaces

    space = spaces.get(f"uni3d:{path}", clip_arch="fbtest-uni3d-clip",
                       clip_checkpoint=str(tmp_path / "clip.safetensors"), npoints=200,
                       num_group=16, group_size=8, heads=3, device="cpu")
    assert space.modalities == ("image", "text", "point") and space.dim == 24
    got = space.encode("point", files)
    pc = torch.stack([torch.from_numpy(load_points(f, 200)) for f in files])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(_reference(state, vit, pc, dict(SIZES)), dim=-1)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    texts = ["a chair", "a plane"]
    with torch.no_grad():
        ref_t = torch.nn.functional.normalize(clip.encode_text(
            open_clip.get_tokenizer("fbtest-uni3d-clip")(texts)), dim=-1)
    torch.testing.assert_close(space.encode("text", texts), ref_t, atol=1e-5, rtol=1e-4)
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    with pytest.raises(MediaError, match="bad.ply: PLY has no vertex element"):
        space.encode("point", [tmp_path / "bad.ply"])
    dec = space.decode_item("point", files[1])
    torch.testing.assert_close(space.encode_decoded("point", [dec]), got[1:])


def test_catalog_download_and_preflight_know_the_files(tmp_path, monkeypatch):
    import freebind.spaces as spaces

    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    info = spaces.info("Uni3D")
    assert info.modalities == ("image", "text", "point") and info.dim == 1024
    assert spaces.info("uni3d-ti").options == (("model", "tiny"),)
    ok, detail = info.check()
    assert not ok and str(tmp_path / "weights" / "uni3d") in detail
    with pytest.raises(SpaceError) as err:
        info.fetch()                         # HF_HUB_OFFLINE: says what and from where
    assert "uni3d-g.pt" in str(err.value) and "BAAI/Uni3D" in str(err.value)
    (tmp_path / "weights" / "uni3d").mkdir(parents=True)
    (tmp_path / "weights" / "uni3d" / "uni3d-g.pt").write_bytes(b"x")
    assert uni3d.weight_file("giant").find_local() == tmp_path / "weights" / "uni3d" / \
        "uni3d-g.pt"
    with pytest.raises(SpaceError, match="unknown Uni3D model 'huge'"):
        uni3d.weight_file("huge")
