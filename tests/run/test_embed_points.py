"""Point clouds through ``freebind embed`` (a folder with PLY files, a mesh, a corrupt
file skipped with its reason; a tar shard) and back through ``freebind import``."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

import freebind
from freebind import spaces
from freebind.data.store import EmbeddingStore, file_key
from freebind.mini.writers import write_pools

pytestmark = pytest.mark.skipif(not spaces.info("mini:3d").check()[0],
                                reason="mini:3d weights not present")


def test_embed_point_files_skip_a_bad_one_and_import_back(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    write_pools(tmp_path / "p", n_audio=0, n_image=0, n_text=0, n_point=5, seed=4)
    folder = tmp_path / "p" / "point"
    (folder / "zz_broken.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n"
                                           b"element vertex 9\nproperty float x\n"
                                           b"property float y\nproperty float z\n"
                                           b"end_header\n\x00\x01")
    (folder / "box.obj").write_text(trimesh.creation.box().export(file_type="obj"))
    out = tmp_path / "emb"
    rep = freebind.embed("mini:3d", [folder], output=out, cache_dir=tmp_path / "c1",
                         progress=False)
    assert rep.modalities["point"]["files"] == 7 and rep.modalities["point"]["kept"] == 6
    (skip,) = [s for s in rep.to_dict()["skipped"] if "zz_broken" in s["path"]]
    assert "truncated" in skip["reason"]
    space = spaces.get("mini:3d")
    good = sorted(p for p in folder.iterdir() if p.name != "zz_broken.ply")
    want = EmbeddingStore(tmp_path / "c3").embed(space, "point", good, progress=False)
    imp = freebind.import_embeddings("mini:3d", out, cache_dir=tmp_path / "c2",
                                     progress=False)
    assert imp.rows == {"point": 6} and imp.native
    got = EmbeddingStore(tmp_path / "c2").view(space, "point", [file_key(p) for p in good])
    # the rows freebind embed wrote (the broken file left its batch one row shorter)
    np.testing.assert_allclose(got[:], want, atol=1e-6, rtol=0)


def test_embed_points_from_a_tar_shard(tmp_path):
    write_pools(tmp_path / "p", n_audio=0, n_image=0, n_text=0, n_point=3, seed=6)
    files = sorted((tmp_path / "p" / "point").glob("*.ply"))
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tf:
        for k, f in enumerate(files):
            for name, data in ((f"s{k}.ply", f.read_bytes()), (f"s{k}.txt", b"a shape")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    rep = freebind.embed("mini:3d", [shard], output=tmp_path / "o", cache_dir=tmp_path / "c",
                         progress=False)
    assert rep.modalities["point"]["kept"] == 3 and rep.modalities["text"]["kept"] == 3
    space = spaces.get("mini:3d")
    direct = space.encode("point", files).numpy()
    store = EmbeddingStore(tmp_path / "c")
    got = store.embed(space, "point", files, progress=False)
    np.testing.assert_allclose(got, direct, atol=1e-6)
