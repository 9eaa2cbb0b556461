"""ImageBind's video, depth, thermal and IMU towers end to end on a tiny random-weight
ImageBindModel loaded through the real loading code, with real files written by the test
(an MPEG-4 video through PyAV, grey PNG maps, .npy IMU arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from real_helpers import TINY_IB, require_packages, save_tiny_imagebind, write_video

require_packages("torch", "imagebind", "timm", "einops", "ftfy", "iopath", "av")
import torch  # noqa: E402

from freebind.data import media  # noqa: E402
from freebind.util.errors import MediaError  # noqa: E402
from freebind.spaces import imagebind  # noqa: E402


def write_grey_png(path, arr) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ibx")
    model, ckpt = save_tiny_imagebind(root)
    rng = np.random.default_rng(0)
    write_video(root / "v0.mp4", 75, 25, size=(96, 128))    # 3 s landscape
    write_video(root / "v1.mp4", 12, 10, size=(128, 80))     # 1.2 s portrait, shorter than a clip
    write_grey_png(root / "d0.png", (rng.random((120, 160)) * 90).astype(np.uint16))
    write_grey_png(root / "d1.png", (rng.random((200, 100)) * 255).astype(np.uint8))
    np.save(root / "d2.npy", (rng.random((64, 64)) * 50).astype(np.float32))
    write_grey_png(root / "t0.png", (rng.random((120, 160)) * 255).astype(np.uint8))
    write_grey_png(root / "t1.png", (rng.random((90, 90)) * 65535).astype(np.uint16))
    np.save(root / "m0.npy", rng.standard_normal((6, 2000)).astype(np.float32))
    np.save(root / "m1.npy", rng.standard_normal((2600, 6)))
    np.save(root / "m2.npy", rng.standard_normal((6, 900)).astype(np.float32))
    files = {
        "video": [root / "v0.mp4", root / "v1.mp4"],
        "depth": [root / "d0.png", root / "d1.png", root / "d2.npy"],
        "thermal": [root / "t0.png", root / "t1.png"],
        "imu": [root / "m0.npy", root / "m1.npy", root / "m2.npy"],
    }
    space = imagebind.load(None, checkpoint=str(ckpt), arch=TINY_IB, batch_size=2, workers=2)
    return model, space, files, root


SHAPES = {"video": (15, 3, 2, 224, 224), "depth": (1, 224, 224), "thermal": (1, 224, 224),
          "imu": (6, 2000)}


@pytest.mark.parametrize("modality", ["video", "depth", "thermal", "imu"])
def test_encode_equals_the_model_on_the_same_inputs(tiny, modality):
    model, space, files, _ = tiny
    items = files[modality]
    x = space.prepare(modality, items)
    assert tuple(x.shape) == (len(items), *SHAPES[modality]) and x.dtype == torch.float32
    out = space.encode(modality, items)
    assert out.shape == (len(items), 16) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(len(items)), atol=1e-5)
    key = "vision" if modality == "video" else modality
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model({key: x})[key], dim=-1)
    assert torch.allclose(out, ref, atol=1e-5)
    # deterministic, batch-size invariant, and distinct items give distinct embeddings
    assert torch.equal(space.encode(modality, items), out)
    assert torch.allclose(space.encode(modality, items, batch_size=1), out, atol=1e-5)
    assert (out @ out.T - torch.eye(len(items))).abs().max() < 0.9999


def test_video_is_the_mean_of_its_fifteen_clip_embeddings(tiny):
    model, space, files, _ = tiny
    x = space.prepare("video", files["video"][:1])[0]            # [15, 3, 2, 224, 224]
    with torch.no_grad():
        per_clip = model({"vision": x[:, None]})["vision"]       # each clip on its own
    expected = torch.nn.functional.normalize(per_clip.mean(0), dim=0)
    assert torch.allclose(space.encode("video", files["video"][:1])[0], expected, atol=1e-5)


def test_video_clip_frames_follow_imagebinds_sampler():
    # 3 s at 25 fps: starts 0, .2, .4, .6, .8 s; frames [ceil(25 s), ceil(25 (s + 2))) → first
    # and last. Upstream multiplies decord's float fps by the sampler's Fraction, so 25·2.2 is
    # 55.00000000000001 and its ceiling 56: clip 1 ends at frame 55, not 54 (reproduced).
    assert imagebind.video_clip_frames(75, 25.0) == [(0, 49), (5, 55), (10, 59), (15, 64),
                                                      (20, 69)]
    # shorter than a clip: five identical clips over every frame
    assert imagebind.video_clip_frames(12, 10.0) == [(0, 11)] * 5
    # 10 s at 30 fps: starts every 1.6 s, each clip 60 frames
    clips = imagebind.video_clip_frames(300, 30.0)
    assert clips == [(0, 59), (48, 107), (96, 155), (144, 203), (192, 251)]


def test_decoded_frames_are_the_requested_ones(tiny):
    _, _, files, _ = tiny
    assert media.video_info(files["video"][0]) == (75, 25.0)
    assert media.video_info(files["video"][1]) == (12, 10.0)
    frames = media.load_video_frames(files["video"][0], [49, 0, 20, 74, 120])
    assert frames.shape == (5, 96, 128, 3) and frames.dtype == np.uint8
    # frame i is grey 3·i outside its bar: compare the region left of all bars' reach
    levels = [float(np.median(f[:, 124:, 0])) for f in frames]
    assert np.allclose(levels, [147, 0, 60, 222, 222], atol=4)   # index 120 → last frame


def test_video_layout_crops_and_normalisation(tiny):
    _, space, files, _ = tiny
    x = space.prepare_item("video", files["video"][0])            # landscape 96×128 → 224×298
    mean = torch.tensor(imagebind.IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(imagebind.IMAGE_STD).view(3, 1, 1)
    raw = x * std.unsqueeze(1) + mean.unsqueeze(1)                # undo CLIP normalisation
    assert raw.min() > -0.02 and raw.max() < 1.02
    # clip 0 keeps frames 0 (black) and 49 (grey 147/255) away from the moving bar
    assert abs(float(raw[0, :, 0, :, -20:].median()) - 0.0) < 0.03
    assert abs(float(raw[0, :, 1, :, 200:].median()) - 147 / 255) < 0.03
    # three crops along the long side: left, centre, right, overlapping by the right amounts
    left, centre, right = x[0], x[1], x[2]
    assert torch.equal(left[..., 37:], centre[..., :-37])
    assert torch.equal(centre[..., 37:], right[..., :-37])
    portrait = space.prepare_item("video", files["video"][1])    # 128×80 → 358×224, crops on y
    assert torch.equal(portrait[0][..., 67:, :], portrait[1][..., :-67, :])


def test_depth_thermal_and_imu_known_values(tiny, tmp_path):
    _, space, _, _ = tiny
    write_grey_png(tmp_path / "flat.png", np.full((50, 80), 30, np.uint16))
    d = space.prepare_item("depth", tmp_path / "flat.png")
    assert torch.allclose(d, torch.full((1, 224, 224), (30 / 75 - 0.0418) / 0.0295), atol=1e-4)
    write_grey_png(tmp_path / "far.png", np.full((50, 80), 200, np.uint8))   # clamped at 75
    far = space.prepare_item("depth", tmp_path / "far.png")
    assert torch.allclose(far, torch.full((1, 224, 224), (1 - 0.0418) / 0.0295), atol=1e-4)
    write_grey_png(tmp_path / "warm.png", np.full((60, 60), 128, np.uint8))
    t = space.prepare_item("thermal", tmp_path / "warm.png")
    assert torch.allclose(t, torch.full((1, 224, 224), 128 / 255), atol=1e-5)
    rgb_grey = np.repeat(np.full((60, 60, 1), 128, np.uint8), 3, axis=2)
    write_grey_png(tmp_path / "warm_rgb.png", rgb_grey)                        # grey saved as RGB
    assert torch.equal(space.prepare_item("thermal", tmp_path / "warm_rgb.png"), t)
    ramp = np.arange(6 * 2600, dtype=np.float32).reshape(6, 2600)
    np.save(tmp_path / "long.npy", ramp)
    m = space.prepare_item("imu", tmp_path / "long.npy")
    assert torch.equal(m, torch.from_numpy(ramp[:, 300:2300]))               # centre crop
    np.save(tmp_path / "short_t.npy", ramp[:, :500].T.copy())                # [T, 6], short
    m = space.prepare_item("imu", tmp_path / "short_t.npy")
    assert torch.equal(m[:, :500], torch.from_numpy(ramp[:, :500])) and not m[:, 500:].any()


def test_corrupt_and_wrong_files_give_one_line_media_errors(tiny, tmp_path):
    _, space, _, _ = tiny
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    (tmp_path / "text.png").write_text("not an image")
    write_grey_png(tmp_path / "colour.png", (np.random.default_rng(1).random((20, 20, 3))
                                             * 255).astype(np.uint8))
    np.save(tmp_path / "imu5.npy", np.zeros((5, 2000), np.float32))
    np.save(tmp_path / "imu_nan.npy", np.full((6, 2000), np.nan, np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = [("video", "junk.mp4", "cannot decode video"),
             ("video", "missing.mp4", "cannot decode video"),
             ("depth", "text.png", "cannot decode image"),
             ("depth", "colour.png", "single-channel"),
             ("thermal", "colour.png", "single-channel"),
             ("imu", "imu5.npy", "shape (6, T)"),
             ("imu", "imu_nan.npy", "NaN"),
             ("imu", "obj.npy", "cannot read array"),
             ("imu", "text.png", "cannot read array")]
    for modality, name, reason in cases:
        with pytest.raises(MediaError) as err:
            space.encode(modality, [tmp_path / name])
        msg = str(err.value)
        assert msg.startswith(f"{tmp_path / name}: ") and reason in msg and "\n" not in msg, msg


def test_registry_lists_exactly_what_the_adapter_encodes(tiny):
    import freebind.spaces as spaces

    _, space, _, _ = tiny
    info = spaces.info("IB")
    assert set(info.modalities) == set(space.modalities) == {
        "audio", "image", "text", "video", "depth", "thermal", "imu"}
    assert spaces.info("imagebind:/x/imagebind_huge.pth").modalities == info.modalities
