"""Point clouds on the search page: three rendered views written at index time, served
with the hits; a .ply dropped on the page is a query."""

import numpy as np
import pytest
from PIL import Image

from freebind.search.thumbs import points_png, read_media_info, write_media_info
from search_world import make_bundle


def test_points_png_draws_three_views(tmp_path):
    # a red rod along x: seen from the front and from above it is a horizontal line; from
    # the side (turned 90 degrees about z) it is a dot in the middle
    xyz = np.stack([np.linspace(-1, 1, 200), np.zeros(200), np.zeros(200)], axis=1)
    points_png(xyz, np.tile([1.0, 0, 0], (200, 1)), tmp_path / "p.png")
    img = np.asarray(Image.open(tmp_path / "p.png").convert("RGB")).astype(int)
    assert img.shape == (80, 240, 3)
    red = (img[:, :, 0] > 180) & (img[:, :, 1] < 90)
    front, side, top = red[:, :80], red[:, 80:160], red[:, 160:]
    assert front.any(axis=0).sum() > 60 and top.any(axis=0).sum() > 60
    assert side.any(axis=0).sum() <= 6
    points_png(xyz, None, tmp_path / "g.png")       # no colour: grey
    grey = np.asarray(Image.open(tmp_path / "g.png").convert("RGB")).astype(int)
    drawn = (grey != [246, 248, 251]).any(axis=2)
    assert drawn.sum() > 100
    assert (np.abs(grey[drawn][:, 0] - grey[drawn][:, 2]) < 3).all()


def test_point_items_indexed_thumbnailed_and_queried(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from freebind import spaces
    from freebind.mini.writers import write_pools
    from freebind.search import Index
    from freebind.serve.search_server import create_app

    if not spaces.info("mini:3d").check()[0]:
        pytest.skip("mini:3d weights not present")
    write_pools(tmp_path / "pools", n_audio=0, n_image=4, n_text=0, n_point=6, seed=2)
    (tmp_path / "pools" / "point" / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\n")
    index = Index(str(make_bundle(tmp_path / "b.safetensors", "mini:bind + c(mini:3d)")))
    clouds = sorted((tmp_path / "pools" / "point").glob("point_*.ply"))
    index.add("point", clouds, store=tmp_path / "cache")
    index.add("image", sorted((tmp_path / "pools" / "image").glob("*.png")),
              store=tmp_path / "cache")
    out = index.save(tmp_path / "index")
    assert write_media_info(out)["thumbnails"] == 6
    info = read_media_info(out)
    index = Index.load(out)
    ids = [i for i, it in enumerate(index.items) if it["modality"] == "point"]
    assert all(info[i]["points"] == 1024 for i in ids)
    client = TestClient(create_app(index, upload_dir=str(tmp_path / "u")),
                        base_url="http://127.0.0.1")
    r = client.post("/api/search", json={"text": "a red dog", "k": 10, "modality": "point"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert {h["id"] for h in hits} == set(ids)
    r = client.get(hits[0]["thumb"])
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    up = client.post("/api/upload", files={"file": ("q.ply", clouds[2].read_bytes(),
                                                    "application/octet-stream")})
    assert up.status_code == 200, up.text
    assert up.json()["modality"] == "point"
    found = client.post("/api/search", json={"upload": up.json()["upload"], "k": 1,
                                             "modality": "point"}).json()["hits"]
    assert found[0]["name"] == clouds[2].name               # the same cloud ranks first
    bad = client.post("/api/upload", files={"file": ("q.xyz", b"1 2 3", "text/plain")})
    assert bad.status_code == 415 and "point: ply" in bad.json()["error"]


def test_cli_search_with_a_point_query(tmp_path):
    import json

    from typer.testing import CliRunner

    from freebind import spaces
    from freebind.mini.writers import write_pools
    from freebind.search import Index
    from freebind_cli.main import app

    if not spaces.info("mini:3d").check()[0]:
        pytest.skip("mini:3d weights not present")
    write_pools(tmp_path / "pools", n_audio=0, n_image=0, n_text=0, n_point=4, seed=3)
    clouds = sorted((tmp_path / "pools" / "point").glob("*.ply"))
    index = Index("mini:3d")
    index.add("point", clouds, store=tmp_path / "cache")
    out = index.save(tmp_path / "index")
    r = CliRunner().invoke(app, ["search", str(out), "--point", str(clouds[1]), "-k", "2",
                                 "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["hits"]
    assert hits[0]["path"] == str(clouds[1]) and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    r = CliRunner().invoke(app, ["search", str(out), "--point", str(tmp_path / "no.ply")])
    assert r.exit_code != 0 and "--point" in r.output and "no such file" in r.output
