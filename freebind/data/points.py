"""3D point clouds: reading the formats shapes are kept in, and the normalisation and
sampling the 3D encoders' authors use (Uni3D, OpenShape), deterministic.

* :func:`read_cloud` reads ``.ply`` (ASCII, binary little/big endian; with or without
  colour; a PLY with faces is a mesh), ``.pcd`` (ascii/binary), ``.npy``/``.npz``
  (``[N, 3]`` xyz or ``[N, 6]`` xyz+rgb; an ``.npz`` with ``xyz`` and optional ``rgb``),
  and meshes (``.obj``, ``.off``, ``.stl``, ``.glb``/``.gltf``, a PLY with faces) sampled to
  points on their surface with trimesh (area-weighted, fixed seed).
* :func:`prepare` turns a cloud into the encoder's input ``[n, 6]`` float32: farthest-point
  sampled (or cycled up) to ``n`` points, centred on the mean, scaled into the unit sphere,
  colours in [0, 1] (the default grey 0.4 when the cloud has none).

Every failure raises :class:`freebind.util.errors.MediaError` with one line naming the file
and the reason: corrupt, empty, NaN-holding, absurdly large, or all points at one place.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from freebind.util.errors import MediaError
from freebind.util.text import first_line

#: extensions that are point clouds or meshes by themselves (``.npy``/``.npz`` are point
#: clouds only when named so: ``--modality point``)
CLOUD_EXTENSIONS = (".ply", ".pcd")
MESH_EXTENSIONS = (".obj", ".off", ".stl", ".glb", ".gltf")
ARRAY_EXTENSIONS = (".npy", ".npz")
#: the colour of a cloud without one (Uni3D's and OpenShape's loaders: 0.4 grey)
DEFAULT_COLOUR = 0.4
#: points sampled on a mesh's surface (Uni3D and OpenShape feed 10,000 points)
MESH_POINTS = 10_000
#: more points than any shape file holds: refused before reading them
MAX_POINTS = 20_000_000
#: a file larger than this is refused unread
MAX_BYTES = 2 << 30


@dataclass
class Cloud:
    """Points ``xyz`` float32 ``[N, 3]`` and colours ``rgb`` float32 ``[N, 3]`` in [0, 1]
    (None when the file has none)."""

    xyz: np.ndarray
    rgb: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


# --- reading ---------------------------------------------------------------------------

def _suffix(path) -> str:
    """The extension of a path or of a member's name (``SHARD::key.ply``)."""
    return Path(str(path).rpartition("::")[2]).suffix.lower()


def _bytes(path) -> bytes:
    from freebind.data.readers import open_member

    got = open_member(path)
    if got is not None:
        data = got.read()
    else:
        try:
            size = os.path.getsize(path)
            if size > MAX_BYTES:
                raise MediaError(f"{path}: {size / 2**30:.1f} GiB is too large for a point "
                                 f"cloud (at most {MAX_BYTES >> 30} GiB)")
            data = Path(path).read_bytes()
        except OSError as exc:
            raise MediaError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise MediaError(f"{path}: empty file")
    return data


def read_cloud(path, mesh_points: int = MESH_POINTS) -> Cloud:
    """The points (and colours) of one file; see the module docstring for formats."""
    ext = _suffix(path)
    data = _bytes(path)
    if ext not in (*CLOUD_EXTENSIONS, *MESH_EXTENSIONS, *ARRAY_EXTENSIONS):
        ext = sniff(data) or ext    # a table cell or tar member named without one
    try:
        if ext == ".ply":
            cloud = _read_ply(data, path, mesh_points)
        elif ext == ".pcd":
            cloud = _read_pcd(data, path)
        elif ext in ARRAY_EXTENSIONS:
            cloud = _read_array(data, path, ext)
        elif ext in MESH_EXTENSIONS:
            cloud = _read_mesh(data, path, ext, mesh_points)
        else:
            raise MediaError(f"{path}: not a point cloud or mesh file ({ext or 'no extension'};"
                             f" use .ply .pcd .npy .npz .obj .off .stl .glb .gltf)")
    except MediaError:
        raise
    except Exception as exc:   # parsers raise many types; all mean "corrupt"
        raise MediaError(f"{path}: cannot read point cloud ({first_line(exc)})") from None
    return _checked(cloud, path)


def sniff(data: bytes) -> str | None:
    """The extension a shape file's first bytes say it has (None: unknown)."""
    head = data[:256]
    if head.startswith(b"ply"):
        return ".ply"
    if head.startswith(b"\x93NUMPY"):
        return ".npy"
    if head.startswith(b"PK"):
        return ".npz"
    if head.startswith(b"glTF"):
        return ".glb"
    text = head.lstrip().decode("latin-1")
    if text.startswith(("# .PCD", "VERSION", "FIELDS")):
        return ".pcd"
    if text.startswith(("OFF", "COFF", "NOFF")):
        return ".off"
    if text.startswith("solid"):
        return ".stl"
    if any(line.split()[:1] in (["v"], ["vn"], ["f"], ["o"], ["mtllib"])
           for line in text.splitlines()):
        return ".obj"
    return None


def _checked(cloud: Cloud, path) -> Cloud:
    xyz = np.asarray(cloud.xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise MediaError(f"{path}: expected points of shape (N, 3), got {tuple(xyz.shape)}")
    if xyz.shape[0] == 0:
        raise MediaError(f"{path}: point cloud has no points")
    if xyz.shape[0] > MAX_POINTS:
        raise MediaError(f"{path}: {xyz.shape[0]:,} points is absurdly many (at most "
                         f"{MAX_POINTS:,})")
    xyz = xyz.astype(np.float32)
    if not np.isfinite(xyz).all():
        raise MediaError(f"{path}: point cloud holds NaN or infinite coordinates")
    rgb = cloud.rgb
    if rgb is not None:
        rgb = np.asarray(rgb, dtype=np.float32)
        if rgb.shape != xyz.shape:
            raise MediaError(f"{path}: {rgb.shape[0]} colours for {xyz.shape[0]} points")
        if not np.isfinite(rgb).all():
            raise MediaError(f"{path}: point colours hold NaN or infinite values")
        if rgb.size and (rgb.max() > 1.0 or rgb.min() < 0.0):
            if rgb.min() < 0.0 or rgb.max() > 255.0:
                raise MediaError(f"{path}: colours outside [0, 1] and [0, 255]")
            rgb = rgb / np.float32(255.0)
    return Cloud(np.ascontiguousarray(xyz), None if rgb is None else np.ascontiguousarray(rgb))


# PLY ----------------------------------------------------------------------------------
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2",
              "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
              "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8",
              "float64": "f8"}
_COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green",
                                                             "diffuse_blue"))


def _ply_header(data: bytes, path):
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise MediaError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for raw in data[:end].decode("ascii", "replace").splitlines()[1:]:
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[4], "list", _ply_type(words[2], path),
                                        _ply_type(words[3], path)))
            else:
                elements[-1][2].append((words[2], _ply_type(words[1], path), None, None))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise MediaError(f"{path}: unknown PLY format {fmt!r}")
    return fmt, elements, body


def _ply_type(name: str, path) -> str:
    if name not in _PLY_TYPES:
        raise MediaError(f"{path}: unknown PLY property type {name!r}")
    return _PLY_TYPES[name]


def _read_ply(data: bytes, path, mesh_points: int) -> Cloud:
    fmt, elements, body = _ply_header(data, path)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise MediaError(f"{path}: PLY has no vertex element")
    if any(e[0] == "face" and e[1] > 0 for e in elements):
        return _read_mesh(data, path, ".ply", mesh_points)
    for _, count, _ in elements:
        if count > MAX_POINTS:
            raise MediaError(f"{path}: {count:,} points is absurdly many (at most "
                             f"{MAX_POINTS:,})")
    if fmt == "ascii":
        table = _ply_ascii(data[body:], elements, path)
    else:
        table = _ply_binary(data, body, elements, "<" if fmt.endswith("little_endian") else ">",
                            path)
    return _cloud_of(table, path)


def _ply_ascii(text: bytes, elements, path) -> dict:
    rows = iter(text.decode("ascii", "replace").splitlines())
    for name, count, props in elements:
        if name != "vertex":
            for _ in range(count):      # skip whole lines of other elements
                next(rows)
            continue
        if any(p[1] == "list" for p in props):
            raise MediaError(f"{path}: PLY vertex element with list properties")
        lines = [next(rows, None) for _ in range(count)]
        if count and lines[-1] is None:
            raise MediaError(f"{path}: PLY ends after fewer than its {count} vertices")
        arr = np.array([ln.split() for ln in lines], dtype=np.float64) if count else \
            np.zeros((0, len(props)))
        if arr.ndim != 2 or arr.shape[1] != len(props):
            raise MediaError(f"{path}: PLY vertex rows do not have {len(props)} values")
        return {p[0]: (arr[:, i], p[1]) for i, p in enumerate(props)}
    raise MediaError(f"{path}: PLY has no vertex element")


def _ply_binary(data: bytes, pos: int, elements, order: str, path) -> dict:
    for name, count, props in elements:
        if any(p[1] == "list" for p in props):
            if name == "vertex":
                raise MediaError(f"{path}: PLY vertex element with list properties")
            pos = _skip_list_element(data, pos, count, props, order, path)
            continue
        dtype = np.dtype([(f"p{i}", order + p[1]) for i, p in enumerate(props)])
        need = dtype.itemsize * count
        if pos + need > len(data):
            raise MediaError(f"{path}: PLY is truncated ({name}: {count} rows promised, "
                             f"{(len(data) - pos) // max(dtype.itemsize, 1)} held)")
        if name == "vertex":
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=pos)
            return {p[0]: (arr[f"p{i}"], p[1]) for i, p in enumerate(props)}
        pos += need
    raise MediaError(f"{path}: PLY has no vertex element")


def _skip_list_element(data: bytes, pos: int, count: int, props, order: str, path) -> int:
    for _ in range(count):
        for _, kind, len_type, item_type in props:
            if kind != "list":
                pos += np.dtype(kind).itemsize
                continue
            n = struct.unpack_from(order + np.dtype(len_type).char, data, pos)[0]
            pos += np.dtype(len_type).itemsize + n * np.dtype(item_type).itemsize
            if pos > len(data):
                raise MediaError(f"{path}: PLY is truncated")
    return pos


def _cloud_of(table: dict, path) -> Cloud:
    if not all(k in table for k in ("x", "y", "z")):
        raise MediaError(f"{path}: PLY vertices lack x, y or z")
    xyz = np.stack([table[k][0].astype(np.float64) for k in ("x", "y", "z")], axis=1)
    rgb = None
    for names in _COLOUR_NAMES:
        if all(k in table for k in names):
            cols = np.stack([table[k][0].astype(np.float64) for k in names], axis=1)
            integer = all(table[k][1][0] in "iu" for k in names)
            rgb = cols / 255.0 if integer else cols
            break
    return Cloud(xyz, rgb)


# PCD ----------------------------------------------------------------------------------
def _read_pcd(data: bytes, path) -> Cloud:
    head, fields, pos = {}, None, 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise MediaError(f"{path}: PCD header has no DATA line")
        line = data[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        head[key.upper()] = rest.split()
        if key.upper() == "DATA":
            break
    try:
        fields = head["FIELDS"]
        sizes = [int(s) for s in head["SIZE"]]
        types = head["TYPE"]
        counts = [int(c) for c in head.get("COUNT", ["1"] * len(fields))]
        n = int(head.get("POINTS", [0])[0]) or int(head["WIDTH"][0]) * int(
            head.get("HEIGHT", ["1"])[0])
    except (KeyError, ValueError, IndexError):
        raise MediaError(f"{path}: PCD header lacks FIELDS/SIZE/TYPE/POINTS") from None
    if n > MAX_POINTS:
        raise MediaError(f"{path}: {n:,} points is absurdly many (at most {MAX_POINTS:,})")
    mode = head["DATA"][0].lower()
    kinds = {"F": "f", "I": "i", "U": "u"}
    try:
        dtype = np.dtype([(f, "<" + kinds[t.upper()] + str(s), (c,))
                          for f, s, t, c in zip(fields, sizes, types, counts)])
    except (KeyError, TypeError):
        raise MediaError(f"{path}: PCD header has an unknown TYPE or SIZE") from None
    if mode == "ascii":
        vals = np.array([ln.split() for ln in data[pos:].decode("ascii", "replace").splitlines()
                         if ln.strip()][:n], dtype=np.float64)
        if vals.shape != (n, sum(counts)):
            raise MediaError(f"{path}: PCD ascii data do not hold {n} rows of "
                             f"{sum(counts)} values")
        offsets = np.cumsum([0] + counts)
        cols = {f: vals[:, offsets[i]:offsets[i + 1]] for i, f in enumerate(fields)}
        raw = {f: vals[:, offsets[i]].astype(dtype[f].base) for i, f in enumerate(fields)}
    elif mode == "binary":
        if pos + dtype.itemsize * n > len(data):
            raise MediaError(f"{path}: PCD is truncated ({n} points promised)")
        arr = np.frombuffer(data, dtype=dtype, count=n, offset=pos)
        cols = {f: arr[f].astype(np.float64) for f in fields}
        raw = {f: arr[f][:, 0] for f in fields}
    else:
        raise MediaError(f"{path}: PCD DATA {mode} is not read here (re-save it as binary or "
                         f"ascii)")
    if not all(k in cols for k in "xyz"):
        raise MediaError(f"{path}: PCD has no x, y, z fields")
    xyz = np.concatenate([cols[k][:, :1] for k in "xyz"], axis=1)
    rgb = None
    for key in ("rgb", "rgba"):
        if key in raw:
            packed = np.ascontiguousarray(raw[key]).view(np.uint32) if raw[key].dtype.itemsize \
                == 4 else raw[key].astype(np.uint32)
            rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255],
                           axis=1).astype(np.float64) / 255.0
            break
    return Cloud(xyz, rgb)


# arrays -------------------------------------------------------------------------------
_XYZ_KEYS = ("xyz", "points", "pos", "pc", "coords", "arr_0")
_RGB_KEYS = ("rgb", "colors", "colours", "color", "colour")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and lists only (no other code is ever run)."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
               for n in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not an array (refused)")


def load_object_array(data: bytes, path) -> np.ndarray:
    """A ``.npy`` holding Python objects (OpenShape's and Uni3D's ``{"xyz", "rgb"}`` dicts,
    or an array of them), read without running any code: only numpy arrays, dicts, lists
    and numbers are unpickled."""
    f = io.BytesIO(data)
    fmt = np.lib.format
    version = fmt.read_magic(f)
    header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    _, _, dtype = header(f)
    if not dtype.hasobject:
        f.seek(0)
        return np.load(f, allow_pickle=False)
    try:
        return _ArrayUnpickler(f).load()
    except Exception as exc:
        raise MediaError(f"{path}: cannot read the objects in this .npy ({first_line(exc)})"
                         ) from None


def _dict_cloud(obj, path) -> Cloud:
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict) or "xyz" not in obj:
        raise MediaError(f"{path}: a .npy of objects must hold a dict with 'xyz' (and 'rgb')")
    rgb = obj.get("rgb")
    return Cloud(np.asarray(obj["xyz"]), None if rgb is None else np.asarray(rgb))


def _read_array(data: bytes, path, ext: str) -> Cloud:
    loaded = load_object_array(data, path) if ext == ".npy" else \
        np.load(io.BytesIO(data), allow_pickle=False)
    if ext == ".npy" and loaded.dtype.hasobject:
        return _dict_cloud(loaded, path)
    if ext == ".npz":
        keys = list(loaded.files)
        key = next((k for k in _XYZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise MediaError(f"{path}: .npz holds {', '.join(keys) or 'nothing'}; name the "
                             f"points 'xyz' (and colours 'rgb')")
        arr = loaded[key]
        rgb_key = next((k for k in _RGB_KEYS if k in keys), None)
        rgb = loaded[rgb_key] if rgb_key else None
    else:
        arr, rgb = loaded, None
    if not np.issubdtype(arr.dtype, np.number):
        raise MediaError(f"{path}: not a numeric array")
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise MediaError(f"{path}: expected an array of shape (N, 3) or (N, 6), got "
                         f"{tuple(arr.shape)}")
    if arr.shape[1] == 6:
        arr, rgb = arr[:, :3], arr[:, 3:]
    return Cloud(arr, rgb)


# meshes -------------------------------------------------------------------------------
def require_mesh_reader(paths) -> None:
    """A UsageError naming trimesh (and the first mesh) when ``paths`` hold a mesh file and
    trimesh is not installed: said once, before any work, not once per file."""
    import importlib.util

    meshes = (p for p in paths if _suffix(p) in MESH_EXTENSIONS)
    first = next(meshes, None)
    if first is not None and importlib.util.find_spec("trimesh") is None:
        from freebind.util.errors import UsageError

        raise UsageError(f"{first}: reading meshes (.obj .off .stl .glb .gltf) needs trimesh: "
                         f"pip install 'freebind[points]'")


def _read_mesh(data: bytes, path, ext: str, n: int) -> Cloud:
    try:
        import trimesh
    except ImportError:
        raise MediaError(f"{path}: reading meshes needs trimesh (pip install trimesh, or "
                         f"'freebind[points]')") from None
    mesh = trimesh.load(io.BytesIO(data), file_type=ext.lstrip("."), force="mesh",
                        process=False)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))))
        if len(verts):
            return Cloud(verts, None)
        raise MediaError(f"{path}: mesh has no faces or vertices")
    if not float(mesh.area) > 0:
        raise MediaError(f"{path}: mesh has zero surface area")
    points, faces = trimesh.sample.sample_surface(mesh, n, seed=0)
    return Cloud(np.asarray(points), _face_colours(mesh, faces))


def _face_colours(mesh, faces: np.ndarray):
    visual = mesh.visual
    try:
        if visual.kind == "vertex":
            vc = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
            return vc[mesh.faces[faces]].mean(axis=1)
        if visual.kind == "face":
            return np.asarray(visual.face_colors, dtype=np.float64)[faces, :3] / 255.0
        if visual.kind == "texture":
            main = visual.material.main_color if hasattr(visual.material, "main_color") else None
            if main is not None:
                return np.tile(np.asarray(main[:3], dtype=np.float64) / 255.0,
                               (len(faces), 1))
    except Exception:   # a mesh whose colours cannot be read is read without them
        return None
    return None


# --- normalisation and sampling --------------------------------------------------------

def normalise(xyz: np.ndarray, path=None) -> np.ndarray:
    """Centre on the mean and scale so the farthest point lies on the unit sphere
    (Uni3D's ``pc_normalize``, OpenShape's ``normalize_pc``)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    centred = xyz - xyz.mean(axis=0, keepdims=True)
    radius = float(np.sqrt((centred ** 2).sum(axis=1)).max()) if len(centred) else 0.0
    if not radius > 1e-12:
        raise MediaError(f"{path or 'point cloud'}: all points lie at one place")
    return (centred / radius).astype(np.float32)


def farthest_points(xyz: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices of ``n`` points chosen by farthest-point sampling from ``start``: each next
    point is the one farthest from those chosen (the first on ties). Deterministic."""
    xyz = np.asarray(xyz, dtype=np.float64)
    total = len(xyz)
    n = min(int(n), total)
    chosen = np.empty(n, dtype=np.int64)
    dist = np.full(total, np.inf)
    x, y, z = (np.ascontiguousarray(xyz[:, k]) for k in range(3))
    last = int(start)
    for i in range(n):
        chosen[i] = last
        d = (x - x[last]) ** 2
        d += (y - y[last]) ** 2
        d += (z - z[last]) ** 2
        np.minimum(dist, d, out=dist)
        last = int(np.argmax(dist))
    return chosen


def prepare(cloud: Cloud, n_points: int, path=None) -> np.ndarray:
    """``[n_points, 6]`` float32: xyz then rgb. Clouds with more points are reduced by
    farthest-point sampling, with fewer are cycled up (point i, then i - N, …); then
    centred and scaled into the unit sphere; colours default to 0.4 grey."""
    if n_points < 1:
        raise MediaError(f"{path or 'point cloud'}: n_points must be >= 1")
    n = len(cloud)
    if n > n_points:
        idx = farthest_points(cloud.xyz, n_points)
    else:
        idx = np.arange(n_points) % n
    xyz = normalise(cloud.xyz[idx], path)
    rgb = (cloud.rgb[idx] if cloud.rgb is not None
           else np.full((len(idx), 3), DEFAULT_COLOUR, dtype=np.float32))
    return np.concatenate([xyz, rgb.astype(np.float32)], axis=1)


def load_points(path, n_points: int, mesh_points: int | None = None) -> np.ndarray:
    """Read and prepare one file: ``[n_points, 6]`` float32 (see :func:`prepare`); meshes
    are sampled at ``max(mesh_points, n_points)`` surface points first."""
    mesh_points = max(int(mesh_points or MESH_POINTS), int(n_points))
    return prepare(read_cloud(path, mesh_points), n_points, path)


# --- writing (the mini world, tests, exports) -----------------------------------------

def ply_bytes(xyz: np.ndarray, rgb: np.ndarray | None = None, binary: bool = True) -> bytes:
    """A PLY file of points (and uchar colours from ``rgb`` in [0, 1])."""
    xyz = np.asarray(xyz, dtype=np.float32)
    props = ["property float x", "property float y", "property float z"]
    if rgb is not None:
        props += ["property uchar red", "property uchar green", "property uchar blue"]
    fmt = "binary_little_endian" if binary else "ascii"
    head = "\n".join(["ply", f"format {fmt} 1.0", f"element vertex {len(xyz)}", *props,
                      "end_header"]) + "\n"
    colours = None if rgb is None else np.clip(np.rint(np.asarray(rgb) * 255), 0, 255
                                               ).astype(np.uint8)
    if not binary:
        rows = [" ".join([*(f"{v:.6g}" for v in p)] +
                         ([] if colours is None else [str(int(c)) for c in colours[i]]))
                for i, p in enumerate(xyz)]
        return (head + "\n".join(rows) + "\n").encode("ascii")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colours is not None:
        fields += [("r", "u1"), ("g", "u1"), ("b", "u1")]
    rec = np.zeros(len(xyz), dtype=fields)
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if colours is not None:
        rec["r"], rec["g"], rec["b"] = colours[:, 0], colours[:, 1], colours[:, 2]
    return head.encode("ascii") + rec.tobytes()
