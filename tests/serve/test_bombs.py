"""Crafted audio bombs sent to `freebind api`, uploaded to `freebind serve` and given to
`freebind embed`: each refused from its header (or read in bounded memory), with the peak
resident memory measured while it is handled."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

import audio_bombs as ab  # noqa: E402
from live_server import LiveServer  # noqa: E402
from search_world import make_bundle, make_index  # noqa: E402

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

REFUSED = {"high_rate": "sample rate 655350 Hz is over the limit of 384000 Hz",
           "many_channels": "1024 audio channels; the limit is 16",
           "long_silence": "18000 s of audio is over the limit of 600 s"}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    return {"high_rate": ab.high_rate(d), "many_channels": ab.many_channels(d),
            "long_silence": ab.long_silence(d), "clip": ab.clip_in_silence(d)}


def test_api_refuses_bombs_from_the_header(tmp_path, bombs):
    from freebind.serve.embeddings_api import EmbeddingService, create_app, guard

    service = EmbeddingService(str(make_bundle(tmp_path / "f.safetensors")), model="fused")
    with LiveServer(guard(create_app(service), max_body=8 << 20, service=service)) as live:
        client = openai.OpenAI(base_url=live.url("/v1"), api_key="x", max_retries=0)
        for name, words in REFUSED.items():
            path = bombs[name]
            data = base64.b64encode(path.read_bytes()).decode()
            fmt = path.suffix[1:]

            def send():
                with pytest.raises(openai.BadRequestError) as info:
                    client.embeddings.create(model="fused", input=[
                        "a dog", {"type": "input_audio",
                                  "input_audio": {"data": data, "format": fmt}}])
                return info.value.response.json()["error"]["message"]

            mb, message = ab.peak_during_mb(send)
            assert words in message and message.startswith("input[1]: "), message
            assert "/tmp" not in message
            assert mb < 64 and (name == "many_channels" or ab.whole_decode_mb(path) > 256), \
                (name, mb)
        # a 600 s recording under the limit: the mini encoders read its centre only
        data = base64.b64encode(bombs["clip"].read_bytes()).decode()
        mb, got = ab.peak_during_mb(lambda: client.embeddings.create(model="fused", input=[
            {"type": "audio", "data": data, "format": "flac"}]))
        assert len(got.data) == 1 and mb < 30 < ab.whole_decode_mb(bombs["clip"]), mb
    service.close()


def test_serve_refuses_bomb_uploads_from_the_header(tmp_path, bombs):
    from freebind.search import Index
    from freebind.serve.search_server import create_app

    index = Index.load(make_index(tmp_path, n=4))
    with LiveServer(create_app(index)) as live:
        for name, words in REFUSED.items():
            path = bombs[name]

            def upload():
                with path.open("rb") as f:
                    return httpx.post(live.url("/api/upload"),
                                      files={"file": (path.name, f)}, timeout=60)

            mb, r = ab.peak_during_mb(upload)
            assert r.status_code == 413 and words in r.json()["error"], r.text
            assert mb < 64 and (name == "many_channels" or ab.whole_decode_mb(path) > 256), \
                (name, mb)


def test_embed_skips_bombs_and_embeds_the_rest(tmp_path, bombs):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("high_rate", "many_channels", "long_silence", "clip"):
        (folder / bombs[name].name).symlink_to(bombs[name])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    log, hwm = tmp_path / "embed.log", tmp_path / "hwm"
    # the child writes its own high-water mark at exit (VmHWM counts from its exec; ru_maxrss
    # would carry this test process's size across the vfork+exec)
    wrapper = ("import atexit, runpy, sys\n"
               "def hwm():\n"
               "    for line in open('/proc/self/status'):\n"
               "        if line.startswith('VmHWM:'):\n"
               f"            open({str(hwm)!r}, 'w').write(line.split()[1])\n"
               "atexit.register(hwm)\n"
               "sys.argv = ['freebind'] + sys.argv[1:]\n"
               "runpy.run_module('freebind_cli.main', run_name='__main__')\n")
    with log.open("w") as sink:
        subprocess.run([sys.executable, "-c", wrapper, "embed", "mini:clap", str(folder), "-o",
                        str(tmp_path / "out"), "--quiet"], stdout=sink,
                       stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text()
    for name, words in REFUSED.items():
        if name != "long_silence":   # embed's own limit is 4 h: 5 h of silence is refused
            assert words in text, text[-3000:]
    assert "18000 s of audio is over the limit of 14400 s" in text, text[-3000:]
    assert "Traceback" not in text
    peak_mb = int(hwm.read_text()) / 1024
    whole = sum(ab.whole_decode_mb(bombs[n]) for n in REFUSED)
    assert peak_mb < whole, (peak_mb, whole)
