"""``freebind api``: the OpenAI-compatible embeddings endpoint, driven by the official
``openai`` client against a live local server; every row equals FusedSpace.encode's."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from live_server import LiveServer  # noqa: E402
from search_world import make_bundle  # noqa: E402

import freebind  # noqa: E402

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

TEXTS = ["a dog barking", "rain on a tin roof", "a violin playing softly"]


def start(target, **kw):
    from freebind.serve.embeddings_api import EmbeddingService, create_app, guard

    max_body = kw.pop("max_body", 1 << 20)
    app = guard(create_app(EmbeddingService(target, **kw)), max_body=max_body)
    return LiveServer(app, log_level="warning").start()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from freebind.mini.writers import write_pools

    root = tmp_path_factory.mktemp("api")
    write_pools(root / "pools", n_audio=2, n_image=2, n_text=0, seed=5)
    bundle = make_bundle(root / "fused.safetensors")
    live = start(str(bundle))
    yield {"root": root, "bundle": bundle, "live": live,
           "wav": sorted((root / "pools" / "audio").glob("*.wav")),
           "png": sorted((root / "pools" / "image").glob("*.png")),
           "client": openai.OpenAI(base_url=live.url("/v1"), api_key="unused",
                                   max_retries=0)}
    live.stop()


def rows(response) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_text_embeddings_equal_fused_encode_in_both_encodings(world):
    client, fused = world["client"], freebind.load(world["bundle"])
    want = fused.encode("text", TEXTS).numpy()
    default = client.embeddings.create(model="fused", input=TEXTS)      # client asks base64
    assert [d.index for d in default.data] == [0, 1, 2]
    assert default.model == "fused" and default.object == "list"
    assert default.usage.prompt_tokens == 3 + 5 + 4   # the mini text tokenizer: one per word
    np.testing.assert_array_equal(rows(default), want)
    floats = client.embeddings.create(model="fused", input=TEXTS, encoding_format="float")
    np.testing.assert_array_equal(rows(floats), want)
    one = client.embeddings.create(model="fused", input=TEXTS[1], dimensions=fused.dim)
    np.testing.assert_array_equal(rows(one), fused.encode("text", TEXTS[1:2]).numpy())


def test_audio_and_images_in_the_same_list(world):
    client, fused = world["client"], freebind.load(world["bundle"])
    wav, png = world["wav"], world["png"]
    b64 = [base64.b64encode(p.read_bytes()).decode() for p in (*wav, *png)]
    inputs = [f"data:audio/wav;base64,{b64[0]}",
              TEXTS[0],
              {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64[2]}"}},
              {"type": "input_audio", "input_audio": {"data": b64[1], "format": "wav"}},
              {"type": "image", "data": b64[3], "format": "png"},
              {"type": "text", "text": TEXTS[2]}]
    got = rows(client.embeddings.create(model="fused", input=inputs))
    audio = fused.encode("audio", [str(p) for p in wav]).numpy()
    image = fused.encode("image", [str(p) for p in png]).numpy()
    text = fused.encode("text", [TEXTS[0], TEXTS[2]]).numpy()
    want = np.stack([audio[0], text[0], image[0], audio[1], image[1], text[1]])
    np.testing.assert_array_equal(got, want)


def test_presets_and_factors(world):
    client, fused = world["client"], freebind.load(world["bundle"])
    ids = [m.id for m in client.models.list().data]
    assert ids == ["fused", "fused@at-expertise", "fused@default", "fused@versatile"] \
        or ids[0] == "fused" and set(ids[1:]) == {f"fused@{p}" for p in fused.presets}
    card = client.models.retrieve("fused@versatile")
    assert card.id == "fused@versatile" and card.owned_by == "freebind"
    versatile = fused.with_factors(preset="versatile").encode("text", TEXTS).numpy()
    by_model = rows(client.embeddings.create(model="fused@versatile", input=TEXTS))
    np.testing.assert_array_equal(by_model, versatile)
    by_field = rows(client.embeddings.create(model="fused", input=TEXTS,
                                             extra_body={"preset": "versatile"}))
    np.testing.assert_array_equal(by_field, versatile)
    low = fused.with_factors("t=0.1", "b2=off").encode("text", TEXTS).numpy()
    for factors in (["t=0.1", "b2=off"], {"t": 0.1, "b2": "off"}):
        got = rows(client.embeddings.create(model="fused", input=TEXTS,
                                            extra_body={"factors": factors}))
        np.testing.assert_array_equal(got, low)
    assert not np.allclose(low, versatile, atol=1e-3)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"model": "fused", "input": TEXTS, "dimensions": 7}, "BadRequestError",
     "this space has 48 dimensions"),
    ({"model": "other", "input": TEXTS}, "NotFoundError", "model 'other' is not served here"),
    ({"model": "fused", "input": [[1, 2, 3]]}, "BadRequestError", "token ids are not"),
    ({"model": "fused", "input": []}, "BadRequestError", "input: the list is empty"),
    ({"model": "fused", "input": ["data:audio/wav;base64,!!"]}, "BadRequestError",
     "input[0]: the data is not valid base64"),
    ({"model": "fused", "input": [{"type": "image_url",
                                   "image_url": {"url": "http://example.org/a.png"}}]},
     "BadRequestError", "nothing is downloaded"),
    ({"model": "fused", "input": ["data:image/gif;base64,R0lGODlh"]}, "BadRequestError",
     "input[0]: image format 'gif' is not one of bmp, jpeg, jpg, png, webp"),
    ({"model": "fused", "input": ["x", {"type": "audio", "data": "bm90IGEgd2F2"}]},
     "BadRequestError", "input[1]"),
    ({"model": "fused", "input": TEXTS, "extra_body": {"factors": ["zz=3"]}},
     "BadRequestError", "zz"),
    ({"model": "fused", "input": TEXTS, "extra_body": {"preset": "nope"}}, "BadRequestError",
     "unknown preset 'nope'"),
])
def test_errors_reach_the_client_as_json(world, kwargs, error, message):
    with pytest.raises(getattr(openai, error)) as info:
        world["client"].embeddings.create(**kwargs)
    body = info.value.response.json()["error"]
    assert message in body["message"] and message in str(info.value)
    assert body["type"] == ("not_found_error" if error == "NotFoundError"
                            else "invalid_request_error")
    assert "/tmp" not in body["message"] and "Traceback" not in body["message"]


def test_localhost_safety_and_body_limit(world):
    url = world["live"].url()
    ok = httpx.get(url + "/v1/models")
    assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
    rebound = httpx.get(url + "/v1/models", headers={"Host": "evil.example"})
    assert rebound.status_code == 400 and "Host" in rebound.json()["error"]["message"]
    cross = httpx.post(url + "/v1/embeddings", json={"model": "fused", "input": "x"},
                       headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    form = httpx.post(url + "/v1/embeddings", data={"model": "fused", "input": "x"})
    assert form.status_code == 415
    big = httpx.post(url + "/v1/embeddings",
                     json={"model": "fused", "input": "x" * (2 << 20)})
    assert big.status_code == 413
    assert big.json()["error"] == {"message": "the request body is larger than the limit of "
                                              f"{1 << 20} bytes",
                                   "type": "invalid_request_error", "param": None, "code": None}


def test_a_plain_space_is_served_too():
    live = start("mini:clap", model="clap")
    try:
        client = openai.OpenAI(base_url=live.url("/v1"), api_key="x", max_retries=0)
        got = rows(client.embeddings.create(model="clap", input=TEXTS))
        want = freebind.spaces.get("mini:clap").encode("text", TEXTS).numpy()
        np.testing.assert_array_equal(got, want)
        assert [m.id for m in client.models.list().data] == ["clap"]
        with pytest.raises(openai.BadRequestError, match="apply to fused bundles"):
            client.embeddings.create(model="clap", input=TEXTS, extra_body={"factors": ["a=1"]})
        with pytest.raises(openai.BadRequestError, match="has no image modality"):
            client.embeddings.create(model="clap", input=[{"type": "image", "data": "eA=="}])
    finally:
        live.stop()


def test_cli_refuses_bad_arguments_before_serving(tmp_path):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    runner = CliRunner()
    for args, msg in ((["api", "mini:clap", "--host", " "], "--host: give an address"),
                      (["api", str(tmp_path / "none.safetensors")], "no such bundle file"),
                      (["api", "hf:org/absent"], "hf:org/absent: fused.safetensors of "
                                                 "org/absent at revision main")):
        r = runner.invoke(app, args)
        assert r.exit_code in (1, 2) and msg in r.output, (args, r.output)
        assert "Traceback" not in r.output
