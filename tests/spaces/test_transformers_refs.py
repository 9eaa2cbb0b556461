"""``transformers:`` references: folders and Hub names (through the real huggingface_hub
cache, no network), never confused with ``hf:`` bundle references; modalities and dimension
from config.json alone; what is missing is said in one line."""

from __future__ import annotations

import shutil

import pytest

from real_helpers import require_packages

require_packages("torch", "transformers", "huggingface_hub", "sentencepiece")

import hub_cache  # noqa: E402
import tiny_transformers as tt  # noqa: E402
from freebind import spaces  # noqa: E402
from freebind.spaces.families import transformers as fam  # noqa: E402
from freebind.util.errors import SpaceError  # noqa: E402

COMMIT = "a" * 40


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf") / "clip"
    tt.save("clip", folder)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_parse():
    assert fam.parse("org/name") == {"repo": "org/name", "revision": None, "head": None}
    assert fam.parse("org/name@v2~video") == {"repo": "org/name", "revision": "v2",
                                                "head": "video"}
    assert fam.parse("/x/y")["path"].as_posix() == "/x/y"
    assert fam.parse("/x~y/z")["path"].as_posix() == "/x~y/z"
    assert fam.parse("/x/y~audio_video")["head"] == "audio_video"
    for bad, why in (("org/name~text", "unknown text head"), ("justaname", "not a folder"),
                     ("", "give a model")):
        with pytest.raises(SpaceError, match=why):
            fam.parse(bad)


def test_dims_and_modalities_from_config_alone(clip_folder, tmp_path):
    only = tmp_path / "config-only"
    only.mkdir()
    shutil.copy(clip_folder / "config.json", only / "config.json")
    info = spaces.info(f"transformers:{only}")
    assert (info.modalities, info.dim, info.licence) == (("image", "text"), 16, "unknown")
    assert info.description.startswith("CLIPModel")


def test_hub_model_from_the_cache(clip_folder, cache):
    files = {p.name: p for p in clip_folder.iterdir() if p.is_file()}
    hub_cache.put(cache, "org/tiny-clip", {"config.json": files["config.json"]},
                  commit=COMMIT)
    info = spaces.info("transformers:org/tiny-clip")
    assert (info.family, info.dim) == ("transformers", 16)
    ok, detail = info.check()
    assert not ok and "weights" in detail and "freebind download" in detail
    from freebind.run.preflight import space_problems

    problems = space_problems(["transformers:org/tiny-clip"])
    assert [p.stage for p in problems] == ["weights"]
    assert "freebind download transformers:org/tiny-clip" in problems[0].text
    with pytest.raises(SpaceError, match="not in the Hugging Face cache and downloads are off"):
        spaces.prefetch("transformers:org/tiny-clip")
    hub_cache.put(cache, "org/tiny-clip", files, commit=COMMIT)
    assert info.check() == (True, str(cache / "models--org--tiny-clip" / "snapshots" / COMMIT))
    space = spaces.get("transformers:org/tiny-clip")
    assert space.encode("text", ["a dog"]).shape == (1, 16)


def test_bundle_and_model_repositories_are_never_confused(clip_folder, cache, tmp_path):
    hub_cache.put(cache, "org/model", {"config.json": clip_folder / "config.json"},
                  commit=COMMIT)
    with pytest.raises(SpaceError, match=r"hf:org/model is a transformers model repository "
                                         r".*transformers:org/model"):
        spaces.info("hf:org/model")
    bundle = tmp_path / "fused.safetensors"
    bundle.write_bytes(b"not read")
    hub_cache.put(cache, "org/bundle", {"fused.safetensors": bundle}, commit=COMMIT)
    with pytest.raises(SpaceError, match=r"org/bundle is a freebind bundle repository .*"
                                         r"use hf:org/bundle"):
        spaces.info("transformers:org/bundle")
    folder = tmp_path / "bundle-folder"
    folder.mkdir()
    shutil.copy(bundle, folder / "fused.safetensors")
    with pytest.raises(SpaceError, match="holds a freebind bundle, not a transformers model"):
        spaces.info(f"transformers:{folder}")
    with pytest.raises(SpaceError, match="not in the Hugging Face cache and downloads are off"):
        spaces.info("transformers:org/absent")


def test_a_model_without_embedding_methods_is_refused(tmp_path):
    import json

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(SpaceError, match="not an embedding model"):
        spaces.info(f"transformers:{tmp_path / 'm'}")


def test_freebind_spaces_describes_a_reference_without_weights(clip_folder, tmp_path):
    import json

    from typer.testing import CliRunner

    from freebind_cli.main import app

    only = tmp_path / "config-only"
    only.mkdir()
    shutil.copy(clip_folder / "config.json", only / "config.json")
    runner = CliRunner()
    out = runner.invoke(app, ["spaces", f"transformers:{only}", "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)[0]
    assert (row["family"], row["dim"], row["modalities"], row["available"],
            row["licence"]) == ("transformers", 16, ["image", "text"], False, "unknown")
    listing = runner.invoke(app, ["spaces"])
    assert "families:" in listing.output, listing.output[-300:]
    assert "transformers:" in listing.output.split("families:")[1]
    bad = runner.invoke(app, ["spaces", f"transformers:{tmp_path / 'nowhere'}"])
    assert bad.exit_code != 0 and "no such folder" in bad.output
