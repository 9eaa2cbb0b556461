"""freebind serve's JSON API: searches, uploads, served files, and 4xx errors that name the
problem (never a 500, never a file outside the index)."""

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from freebind.search import Index  # noqa: E402
from freebind.serve.search_server import create_app  # noqa: E402
from search_world import make_index  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    index = Index.load(make_index(root))
    app = create_app(index, max_upload=200_000, upload_dir=str(root / "uploads"))
    return TestClient(app, base_url="http://127.0.0.1:8765",
                      raise_server_exceptions=False), index, root


def test_info_and_page(served):
    client, index, _ = served
    info = client.get("/api/info").json()
    assert info["modalities"] == {"audio": 24, "image": 24}
    assert {(c["bond"], c["modality"]) for c in info["controls"]} == {
        ("b1", "image"), ("b1", "text"), ("b2", "audio"), ("b2", "text")}
    assert info["preset_values"]["at-expertise"]["b2.audio"] == 0.8
    page = client.get("/")
    assert page.status_code == 200 and "freebind search" in page.text
    for asset in ("app.js", "app.css"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and len(r.content) > 500
    assert "http" not in client.get("/static/app.js").text.replace("/api/", "")  # no CDN


def test_search_matches_the_library_and_factors_change_the_order(served):
    client, index, _ = served
    body = {"text": "a loud dog barks repeatedly", "k": 10, "modality": "audio"}
    r = client.post("/api/search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    lib = index.search("a loud dog barks repeatedly", k=10, modality="audio")
    assert [h["id"] for h in hits] == [h.id for h in lib]
    assert all(h["media"] == f"/api/media/{h['id']}" for h in hits)
    r2 = client.post("/api/search", json={**body, "factors": {"b2.audio": 1.0,
                                                              "b2.text": 1.0}})
    lib2 = index.search("a loud dog barks repeatedly", k=10, modality="audio",
                        factors=["b2.audio=1.0", "b2.text=1.0"])
    assert [h["id"] for h in r2.json()["hits"]] == [h.id for h in lib2]
    assert [h["id"] for h in r2.json()["hits"]] != [h["id"] for h in hits]
    r3 = client.post("/api/search", json={**body, "preset": "at-expertise"})
    lib3 = index.search("a loud dog barks repeatedly", k=10, modality="audio",
                        preset="at-expertise")
    assert [h["id"] for h in r3.json()["hits"]] == [h.id for h in lib3]
    both = client.post("/api/search", json={"text": "a red dog", "k": 48}).json()["hits"]
    assert {h["modality"] for h in both} == {"audio", "image"}


def test_media_by_id_only(served):
    client, index, _ = served
    audio_id = next(i for i, it in enumerate(index.items) if it["modality"] == "audio")
    r = client.get(f"/api/media/{audio_id}")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content[:4] == b"RIFF"
    image_id = next(i for i, it in enumerate(index.items) if it["modality"] == "image")
    assert client.get(f"/api/media/{image_id}").content[:4] == b"\x89PNG"
    for bad in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
                "/etc/passwd", "..\\..\\etc\\passwd", "-1", "1e3", "99999", "0x1",
                "%2Fetc%2Fpasswd", "....//....//etc/passwd", str(len(index.items))):
        r = client.get(f"/api/media/{bad}")
        assert r.status_code == 404, (bad, r.status_code)
        assert "root:" not in r.text
    for bad in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2Findex.html",
                "app.js%00.css", "../serve.py", "__init__.py"):
        r = client.get(f"/static/{bad}")
        assert r.status_code == 404, (bad, r.status_code)
    assert client.get("/../../etc/passwd").status_code == 404


def test_upload_then_search_by_token(served):
    client, index, root = served
    wav = sorted((root / "pools" / "audio").glob("*.wav"))[0]
    r = client.post("/api/upload", files={"file": ("clip.wav", wav.read_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    token = r.json()["upload"]
    assert r.json()["modality"] == "audio"
    hits = client.post("/api/search", json={"upload": token, "modality": "audio",
                                            "k": 3}).json()["hits"]
    assert index.items[hits[0]["id"]]["path"] == str(wav)  # the clip finds itself
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("files,status,words", [
    ({"file": ("x.wav", b"not a wav at all", "audio/wav")}, 422, "x.wav"),
    ({"file": ("x.png", b"\x89PNG broken", "image/png")}, 422, "x.png"),
    ({"file": ("x.exe", b"MZ....", "application/octet-stream")}, 415, "not an audio or image"),
    ({"file": ("big.wav", b"0" * 300_000, "audio/wav")}, 413, "limit"),
    ({"file": ("empty.wav", b"", "audio/wav")}, 400, "empty"),
    ({"other": ("x.wav", b"abc", "audio/wav")}, 400, "no 'file' field"),
])
def test_bad_uploads_are_4xx_naming_the_problem(served, files, status, words):
    client, _, _ = served
    r = client.post("/api/upload", files=files)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


@pytest.mark.parametrize("body,words", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"k": 5}', "exactly one of"),
    ('{"text": "dog", "upload": "abc"}', "exactly one of"),
    ('{"text": ""}', "non-empty"),
    ('{"text": 5}', "non-empty"),
    ('{"text": "dog", "k": 0}', "'k'"),
    ('{"text": "dog", "k": "ten"}', "'k'"),
    ('{"text": "dog", "k": true}', "'k'"),
    ('{"text": "dog", "modality": "smell"}', "'modality'"),
    ('{"text": "dog", "factors": {"b2.audio": 3}}', "outside [0, 1]"),
    ('{"text": "dog", "factors": {"b9.audio": 0.5}}', "no bond or expert"),
    ('{"text": "dog", "factors": {"b2.audio": [1]}}', "number or on/off"),
    ('{"text": "dog", "factors": 7}', "'factors'"),
    ('{"text": "dog", "preset": "nope"}', "unknown preset"),
    ('{"text": "dog", "preset": 3}', "'preset'"),
    ('{"text": "dog", "colour": "red"}', "unknown field"),
    ('{"upload": "feedbeef"}', "unknown or expired upload"),
    ('{"item": -1}', "'item'"),
    ('{"item": 100000}', "no item"),
])
def test_malformed_search_is_4xx_json(served, body, words):
    client, _, _ = served
    r = client.post("/api/search", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    assert words in r.json()["error"], r.json()


def test_search_by_item(served):
    client, index, _ = served
    hits = client.post("/api/search", json={"item": 0, "k": 1,
                                            "modality": index.items[0]["modality"]}).json()
    assert hits["hits"][0]["id"] == 0


def test_unknown_routes_and_methods_are_json(served):
    client, _, _ = served
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/api/search")
    assert r.status_code == 405 and "error" in r.json()
    r = client.post("/api/upload", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
