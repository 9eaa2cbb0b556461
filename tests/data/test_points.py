"""Point clouds: every reader on files written here (PLY ASCII/binary ± colour, PCD,
.npy/.npz, meshes written by trimesh), the normalisation and farthest-point sampling on
hand-computed values, and one-line reasons for bad clouds."""

import io
import struct
import tarfile

import numpy as np
import pytest

from freebind.data import points as P
from freebind.data.media import discover
from freebind.util.errors import MediaError
from freebind.util.vocab import modality_of

RNG = np.random.default_rng(0)
XYZ = RNG.normal(size=(50, 3)).astype(np.float32)
RGB = RNG.integers(0, 256, size=(50, 3)) / 255.0


def test_modality_by_extension():
    for ext in (".ply", ".pcd", ".obj", ".off", ".stl", ".glb", ".gltf"):
        assert modality_of(f"a/b{ext.upper()}") == "point"
    assert modality_of("x.npy") is None      # arrays are point clouds only when named so


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("colour", [True, False])
def test_ply_round_trip(tmp_path, binary, colour):
    f = tmp_path / "c.ply"
    f.write_bytes(P.ply_bytes(XYZ, RGB if colour else None, binary=binary))
    c = P.read_cloud(f)
    np.testing.assert_allclose(c.xyz, XYZ, atol=1e-5)
    if colour:
        np.testing.assert_allclose(c.rgb, RGB, atol=1e-6)
    else:
        assert c.rgb is None


def test_ply_big_endian_double_with_extra_element_first(tmp_path):
    """A big-endian PLY whose vertices are doubles with an extra property, after an element
    of another kind; float colours are kept as they are."""
    head = ("ply\nformat binary_big_endian 1.0\ncomment x\nelement camera 1\n"
            "property float fx\nelement vertex 2\nproperty double x\nproperty double y\n"
            "property double z\nproperty float nx\nproperty float red\nproperty float green\n"
            "property float blue\nend_header\n").encode()
    body = struct.pack(">f", 1.0)
    body += struct.pack(">dddffff", 1, 2, 3, 0, 0.5, 0.25, 1.0)
    body += struct.pack(">dddffff", -1, 0, 5, 0, 0.0, 1.0, 0.0)
    (tmp_path / "b.ply").write_bytes(head + body)
    c = P.read_cloud(tmp_path / "b.ply")
    np.testing.assert_array_equal(c.xyz, [[1, 2, 3], [-1, 0, 5]])
    np.testing.assert_array_equal(c.rgb, [[0.5, 0.25, 1.0], [0, 1, 0]])


def test_ply_with_faces_is_a_mesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(2, 2, 2))
    (tmp_path / "m.ply").write_bytes(box.export(file_type="ply"))
    c = P.read_cloud(tmp_path / "m.ply", mesh_points=500)
    assert c.xyz.shape == (500, 3)
    # every sampled point lies on the box's surface: one coordinate is +-1
    assert np.allclose(np.abs(c.xyz).max(axis=1), 1.0, atol=1e-5)


def _pcd(fields, rows, binary, types="F F F", sizes="4 4 4"):
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {sizes}\nTYPE {types}\n"
            f"COUNT {' '.join('1' for _ in fields.split())}\nWIDTH {len(rows)}\nHEIGHT 1\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(rows)}\n"
            f"DATA {'binary' if binary else 'ascii'}\n")
    return head, rows


@pytest.mark.parametrize("binary", [True, False])
def test_pcd_with_packed_rgb(tmp_path, binary):
    packed = [(255 << 16) | (128 << 8) | 0, (0 << 16) | (0 << 8) | 255]
    as_float = [struct.unpack("<f", struct.pack("<I", p))[0] for p in packed]
    rows = [(1.0, 2.0, 3.0, as_float[0]), (4.0, 5.0, 6.0, as_float[1])]
    head, _ = _pcd("x y z rgb", rows, binary, "F F F F", "4 4 4 4")
    if binary:
        body = b"".join(struct.pack("<fffI", *r[:3], p) for r, p in zip(rows, packed))
    else:
        body = "\n".join(" ".join(repr(v) for v in r) for r in rows).encode()
    (tmp_path / "a.pcd").write_bytes(head.encode() + body)
    c = P.read_cloud(tmp_path / "a.pcd")
    np.testing.assert_array_equal(c.xyz, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(c.rgb, [[1, 128 / 255, 0], [0, 0, 1]], atol=1e-7)


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", XYZ)
    np.save(tmp_path / "b.npy", np.concatenate([XYZ, RGB * 255], axis=1))
    np.savez(tmp_path / "c.npz", xyz=XYZ, rgb=RGB)
    assert P.read_cloud(tmp_path / "a.npy").rgb is None
    b = P.read_cloud(tmp_path / "b.npy")
    np.testing.assert_allclose(b.rgb, RGB, atol=1e-6)     # 0..255 colours scaled
    c = P.read_cloud(tmp_path / "c.npz")
    np.testing.assert_allclose(c.xyz, XYZ)
    np.testing.assert_allclose(c.rgb, RGB, atol=1e-7)


@pytest.mark.parametrize("ext", ["obj", "off", "stl", "glb"])
def test_meshes_sampled_on_their_surface(tmp_path, ext):
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(2, 4, 6))
    data = box.export(file_type=ext)
    (tmp_path / f"m.{ext}").write_bytes(data.encode() if isinstance(data, str) else data)
    c = P.read_cloud(tmp_path / f"m.{ext}", mesh_points=300)
    assert c.xyz.shape == (300, 3)
    on_face = np.isclose(np.abs(c.xyz), [1, 2, 3], atol=1e-4).any(axis=1)
    assert on_face.all()
    again = P.read_cloud(tmp_path / f"m.{ext}", mesh_points=300)
    np.testing.assert_array_equal(c.xyz, again.xyz)     # deterministic sampling


def test_mesh_face_colours(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box()
    box.visual.face_colors = np.tile([255, 0, 0, 255], (len(box.faces), 1))
    (tmp_path / "m.ply").write_bytes(box.export(file_type="ply"))
    c = P.read_cloud(tmp_path / "m.ply", mesh_points=64)
    assert c.rgb is not None and np.allclose(c.rgb, [1, 0, 0])


def test_farthest_points_hand_computed():
    line = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [10, 0, 0]], dtype=np.float32)
    # from 0: the farthest is 10 (index 3); then min distances 1 -> 1, 2 -> 4: index 2
    assert P.farthest_points(line, 3).tolist() == [0, 3, 2]


def test_normalise_hand_computed():
    got = P.normalise(np.array([[1, 1, 1], [3, 1, 1], [2, 3, 1]], dtype=np.float32))
    # mean (2, 5/3, 1); farthest point (2,3,1) at distance 4/3
    np.testing.assert_allclose(got, [[-0.75, -0.5, 0], [0.75, -0.5, 0], [0, 1, 0]],
                               atol=1e-6)


def test_prepare_sizes_and_default_colour():
    c = P.Cloud(XYZ[:7], None)
    up = P.prepare(c, 16)
    assert up.shape == (16, 6) and up.dtype == np.float32
    np.testing.assert_array_equal(up[7:14, :3], up[:7, :3])     # cycled up
    assert (up[:, 3:] == np.float32(0.4)).all()
    down = P.prepare(P.Cloud(XYZ, RGB), 10)
    assert down.shape == (10, 6)
    assert np.isclose(np.linalg.norm(down[:, :3], axis=1).max(), 1.0)
    np.testing.assert_allclose(down[:, :3].mean(0), 0, atol=1e-6)
    np.testing.assert_array_equal(down, P.prepare(P.Cloud(XYZ, RGB), 10))


def _bad(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(MediaError) as e:
        P.load_points(f, 8)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg
    return msg


def test_bad_clouds_get_one_line_reasons(tmp_path):
    assert "empty file" in _bad(tmp_path, "e.ply", b"")
    assert "no points" in _bad(tmp_path, "z.ply", P.ply_bytes(np.zeros((0, 3))))
    nan = XYZ.copy()
    nan[3, 1] = np.nan
    assert "NaN" in _bad(tmp_path, "n.ply", P.ply_bytes(nan))
    assert "truncated" in _bad(tmp_path, "t.ply", P.ply_bytes(XYZ)[:-20])
    assert "one place" in _bad(tmp_path, "o.ply", P.ply_bytes(np.ones((5, 3))))
    huge = b"ply\nformat binary_little_endian 1.0\nelement vertex 999999999\n" \
           b"property float x\nproperty float y\nproperty float z\nend_header\n"
    assert "absurdly many" in _bad(tmp_path, "h.ply", huge)
    assert "not a PLY" in _bad(tmp_path, "g.ply", b"garbage")
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 5)))
    assert "(N, 3) or (N, 6)" in _bad(tmp_path, "w.npy", buf.getvalue())
    assert "no faces or vertices" in _bad(tmp_path, "c.obj", b"\x00\x01 not a mesh")


def test_discover_and_tar_members(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.ply").write_bytes(P.ply_bytes(XYZ, RGB))
    (tmp_path / "s" / "b.npy").write_bytes(b"")
    found = discover([tmp_path / "s"])
    assert found["point"] == [tmp_path / "s" / "a.ply"]
    assert discover([tmp_path / "s"], as_modality="point")["point"] == sorted(
        (tmp_path / "s").iterdir())
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in (("k1.ply", P.ply_bytes(XYZ)), ("k1.txt", b"a cube")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    from freebind.data.readers import read_shards

    listing = read_shards(str(shard))
    (item,) = listing.items["point"]
    np.testing.assert_allclose(P.read_cloud(item).xyz, XYZ, atol=1e-6)
    np.testing.assert_array_equal(P.load_points(item, 8), P.load_points(str(item), 8))


def test_sniffed_without_extension():
    assert P.sniff(P.ply_bytes(XYZ)) == ".ply"
    assert P.sniff(b"OFF\n3 1 0\n") == ".off"
    assert P.sniff(b"# .PCD v0.7\nFIELDS x y z\n") == ".pcd"


def test_openshape_dict_npy_read_without_running_code(tmp_path):
    import os

    d = {"xyz": XYZ, "rgb": (RGB * 255).astype(np.float32)}
    np.save(tmp_path / "s.npy", np.array(d, dtype=object), allow_pickle=True)
    c = P.read_cloud(tmp_path / "s.npy")
    np.testing.assert_allclose(c.xyz, XYZ)
    np.testing.assert_allclose(c.rgb, RGB, atol=1e-6)       # 0..255 as OpenShape stores

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    np.save(tmp_path / "e.npy", arr, allow_pickle=True)
    with pytest.raises(MediaError, match="is not an array"):
        P.read_cloud(tmp_path / "e.npy")
    assert not (tmp_path / "pwned").exists()


def test_clouds_in_a_parquet_table_read_by_content(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from freebind.data.readers import read_pool

    buf = io.BytesIO()
    np.savez(buf, xyz=XYZ[:10])
    cells = [P.ply_bytes(XYZ, RGB), buf.getvalue()]
    pq.write_table(pa.table({"point": cells, "caption": ["a", "b"]}), tmp_path / "t.parquet")
    listing = read_pool("point", str(tmp_path / "t.parquet"))
    a, b = listing.items["point"]
    np.testing.assert_allclose(P.read_cloud(a).xyz, XYZ, atol=1e-6)   # sniffed: PLY
    np.testing.assert_allclose(P.read_cloud(b).xyz, XYZ[:10])          # sniffed: npz


def test_a_missing_mesh_reader_is_named_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    from freebind.util.errors import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trimesh" else real(name, *a))
    P.require_mesh_reader([tmp_path / "a.ply"])          # clouds need nothing
    with pytest.raises(UsageError, match=r"m\.obj: reading meshes .* needs trimesh"):
        P.require_mesh_reader([tmp_path / "a.ply", tmp_path / "m.obj"])
