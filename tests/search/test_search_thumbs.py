"""What the page shows of audio without playing it: waveform thumbnails, durations and
captions written at index time, and served with the hits."""

import json
import wave

import numpy as np
import pytest
from PIL import Image

from freebind.util.errors import UsageError
from freebind.search.thumbs import file_captions, read_media_info, waveform_png, \
    write_media_info
from search_world import make_index


def test_waveform_png_draws_the_envelope(tmp_path):
    t = np.linspace(0, 1, 8000, dtype=np.float32)
    wave_ = np.where(t < 0.5, 0.0, np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    waveform_png(wave_, tmp_path / "w.png", width=100, height=40)
    img = np.asarray(Image.open(tmp_path / "w.png").convert("RGB"))
    assert img.shape == (40, 100, 3)
    blue = (img[:, :, 2] > 150) & (img[:, :, 0] < 100)
    # silent first half: only the mid line at most; loud second half: nearly full height
    assert blue[:, :45].sum(axis=0).max() <= 2
    assert blue[:, 55:].sum(axis=0).min() >= 30


def test_captions_table(tmp_path):
    f = tmp_path / "test.csv"
    f.write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,0,A dog  barks\n"
                 "2,xyz,5,Rain falls\n")
    assert file_captions(f) == {"abc": "A dog barks", "xyz": "Rain falls"}
    g = tmp_path / "c.tsv"
    g.write_text("file_name\tcaption_1\tcaption_2\nx.wav\tone\ttwo\n")
    assert file_captions(g, "caption_2") == {"x": "two"}
    with pytest.raises(UsageError, match="caption column"):
        file_captions(g, "nope")


def test_index_time_media_info_and_the_api(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from freebind.search import Index
    from freebind.serve.search_server import create_app

    index_dir = make_index(tmp_path, n=6)
    info = read_media_info(index_dir)
    index = Index.load(index_dir)
    audio = [i for i, it in enumerate(index.items) if it["modality"] == "audio"]
    for i in audio:
        path = index.items[i]["path"]
        with wave.open(path) as w:
            seconds = w.getnframes() / w.getframerate()
        assert info[i]["duration"] == pytest.approx(seconds, abs=0.01)
        assert (index_dir / "thumbs" / f"{i}.png").is_file()
    assert info[audio[0]]["caption"].startswith("caption of ")
    client = TestClient(create_app(index, upload_dir=str(tmp_path / "u")),
                        base_url="http://127.0.0.1")
    hits = client.post("/api/search", json={"text": "a tone", "k": 6,
                                            "modality": "audio"}).json()["hits"]
    by_id = {h["id"]: h for h in hits}
    h = by_id[audio[0]]
    assert h["caption"] == info[audio[0]]["caption"] and h["duration"] > 0
    r = client.get(h["thumb"])
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    img_id = next(i for i, it in enumerate(index.items) if it["modality"] == "image")
    assert client.get(f"/api/thumb/{img_id}").status_code == 404
    # incremental: a second run makes nothing new
    assert write_media_info(index_dir) == {"thumbnails": 0, "captions": 0}
    assert json.loads((index_dir / "media.json").read_text()) == \
        {str(k): v for k, v in info.items()}
