"""API keys, /health and /metrics on both servers: the official openai client with a wrong
and the right key, LangChain's OpenAIEmbeddings, the search page's login and cookie."""

from __future__ import annotations

import re

import numpy as np
import pytest

from live_server import LiveServer  # noqa: E402
from search_world import make_bundle, make_index  # noqa: E402

import freebind  # noqa: E402

openai = pytest.importorskip("openai")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

KEY, OTHER = "test-key-" + "a" * 24, "second-key-" + "b" * 24
TEXTS = ["a dog barking", "rain on a tin roof"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from freebind.serve.embeddings_api import EmbeddingService, create_app, guard
    from freebind.serve.ops import Metrics

    bundle = make_bundle(tmp_path_factory.mktemp("keys") / "fused.safetensors")
    service = EmbeddingService(str(bundle), model="fused", metrics=Metrics(("/v1/",)))
    live = LiveServer(guard(create_app(service), service=service, keys=[KEY, OTHER]))
    live.start()
    yield {"live": live, "bundle": bundle}
    live.stop()
    service.close()


def test_openai_client_wrong_key_is_401_right_key_works(api):
    url = api["live"].url("/v1")
    wrong = openai.OpenAI(base_url=url, api_key="not-the-key-" + "c" * 20, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.embeddings.create(model="fused", input=TEXTS)
    body = info.value.response.json()["error"]
    assert body["type"] == "authentication_error" and "not valid" in body["message"]
    assert set(body) == {"message", "type", "param", "code"}
    assert info.value.response.headers["www-authenticate"] == "Bearer"
    want = freebind.load(api["bundle"]).encode("text", TEXTS).numpy()
    for key in (KEY, OTHER):
        right = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        got = right.embeddings.create(model="fused", input=TEXTS)
        np.testing.assert_array_equal(np.array([d.embedding for d in got.data],
                                               dtype=np.float32), want)
    none = httpx.get(api["live"].url("/v1/models"))
    assert none.status_code == 401 and none.json()["error"]["type"] == "authentication_error"


def test_health_and_metrics_need_the_key_unless_asked(api):
    base = api["live"].url()
    assert httpx.get(base + "/health").status_code == 401
    assert httpx.get(base + "/metrics").status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    health = httpx.get(base + "/health", headers=auth)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["model"] == "fused"
    metrics = httpx.get(base + "/metrics", headers=auth)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith(
        "text/plain")
    text = metrics.text
    for name in ("freebind_requests_total", "freebind_request_errors_total",
                 "freebind_request_seconds_bucket", "freebind_batch_size_bucket",
                 "freebind_items_encoded_total"):
        assert name in text, name
    assert re.search(r'freebind_request_errors_total\{route="/v1/",status="401"\} [1-9]',
                     text)
    assert re.search(r'freebind_items_encoded_total\{modality="text"\} [1-9]', text)
    assert KEY not in text and OTHER not in text


def test_public_health_and_langchain(api):
    from freebind.serve.embeddings_api import EmbeddingService, create_app, guard

    service = EmbeddingService(str(api["bundle"]), model="fused")
    with LiveServer(guard(create_app(service), service=service, keys=[KEY],
                          open_ops=True)) as live:
        assert httpx.get(live.url("/health")).json()["status"] == "ok"
        assert "freebind_requests_total" in httpx.get(live.url("/metrics")).text
        assert httpx.get(live.url("/v1/models")).status_code == 401
        langchain_openai = pytest.importorskip("langchain_openai")
        emb = langchain_openai.OpenAIEmbeddings(
            model="fused", base_url=live.url("/v1"), api_key=KEY,
            check_embedding_ctx_length=False, max_retries=0)
        want = freebind.load(api["bundle"]).encode("text", TEXTS).numpy()
        np.testing.assert_allclose(np.array(emb.embed_documents(TEXTS)), want,
                                   rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.array(emb.embed_query(TEXTS[0])), want[0],
                                   rtol=0, atol=1e-6)
    service.close()


def test_token_ids_name_the_langchain_setting_and_empty_texts_are_refused(api):
    client = openai.OpenAI(base_url=api["live"].url("/v1"), api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        client.embeddings.create(model="fused", input=[[101, 102]])
    for empty in ("", ["ok", "  "]):
        with pytest.raises(openai.BadRequestError, match="the text is empty"):
            client.embeddings.create(model="fused", input=empty)


def test_keys_gathered_checked_and_never_shown(tmp_path):
    from freebind.serve.auth import KEY_ENV, KeyRing, check_exposure, gather_keys
    from freebind.util.errors import UsageError

    f = tmp_path / "keys"
    f.write_text(f"# team keys\n{KEY}\n\n{OTHER}\n")
    got = gather_keys(["cli-key-" + "d" * 20], f, {KEY_ENV: "env-key-" + "e" * 20})
    assert got == ["cli-key-" + "d" * 20, "env-key-" + "e" * 20, KEY, OTHER]
    with pytest.raises(UsageError, match="at least 12"):
        gather_keys(["short"], None, {})
    with pytest.raises(UsageError, match="cannot read"):
        gather_keys([], tmp_path / "absent", {})
    ring = KeyRing([KEY])
    assert ring.matches(KEY) and not ring.matches(KEY[:-1]) and not ring.matches(None)
    assert KEY not in repr(ring) and repr(ring) == "KeyRing(1 key)"
    assert check_exposure("127.0.0.1", KeyRing()) is None
    assert check_exposure("0.0.0.0", ring) is None
    with pytest.raises(UsageError, match="--no-auth"):
        check_exposure("0.0.0.0", KeyRing())
    assert "warning" in check_exposure("192.168.1.5", KeyRing(), no_auth=True)


def test_api_cli_refuses_a_reachable_bind_without_a_key(monkeypatch):
    from typer.testing import CliRunner

    import freebind.serve.embeddings_api as api_mod
    from freebind_cli.main import app

    calls = []
    monkeypatch.setattr(api_mod, "serve", lambda *a, **k: calls.append(k))
    runner = CliRunner()
    r = runner.invoke(app, ["api", "mini:clap", "--host", "0.0.0.0"])
    assert r.exit_code != 0 and "needs an API key" in r.output and not calls
    r = runner.invoke(app, ["api", "mini:clap", "--host", "0.0.0.0"],
                      env={"FREEBIND_API_KEY": KEY})
    assert r.exit_code == 0 and calls[-1]["keys"] == [KEY] and KEY not in r.output
    r = runner.invoke(app, ["api", "mini:clap", "--host", "0.0.0.0", "--no-auth",
                            "--public-health"])
    assert r.exit_code == 0 and calls[-1]["open_ops"] is True and "warning" in r.output


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from freebind.search import Index
    from freebind.serve.search_server import create_app

    index_dir = make_index(tmp_path_factory.mktemp("serve-keys"), n=6)
    app = create_app(Index.load(index_dir), keys=[KEY])
    with LiveServer(app) as live:
        yield live, Index.load(index_dir)


def test_serve_login_cookie_guards_page_json_and_files(served):
    live, index = served
    base = live.url()
    anon = httpx.Client(base_url=base)
    page = anon.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    for path in ("/api/info", "/api/media/0", "/static/app.js", "/metrics", "/health"):
        assert anon.get(path).status_code == 401, path
    assert anon.post("/api/search", json={"text": "dog"}).status_code == 401
    form = anon.get("/login")
    assert form.status_code == 200 and 'name="key"' in form.text
    bad = anon.post("/login", data={"key": "wrong-" + "x" * 20})
    assert bad.status_code == 401 and "not valid" in bad.text and "wrong-" not in bad.text
    assert "set-cookie" not in bad.headers
    ok = anon.post("/login", data={"key": KEY})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEY not in cookie
    user = httpx.Client(base_url=base, cookies=anon.cookies)
    assert user.get("/").status_code == 200
    assert user.get("/api/info").json()["items"] == len(index.items)
    assert user.get("/api/media/0").status_code == 200
    hits = user.post("/api/search", json={"text": "a dog barks", "k": 3}).json()["hits"]
    assert len(hits) == 3
    assert user.get("/health").json()["items"] == len(index.items)
    scripted = httpx.get(base + "/api/info", headers={"Authorization": f"Bearer {KEY}"})
    assert scripted.status_code == 200
    out = user.post("/logout")
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert httpx.get(base + "/api/info", cookies=anon.cookies).status_code == 401


def test_prompt_tokens_by_a_hugging_face_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    from freebind.run.targets import Target
    from freebind.serve.embeddings_api import token_counter

    vocab = {"[UNK]": 0, "[CLS]": 1, "a": 2, "dog": 3}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")

    class Space:              # a space whose text encoder loads its tokenizer on demand
        def tokenizer(self):
            return hf

    count = token_counter(Target(ref="x", label="x", space=Space()))
    assert count(["a dog barks", "rain, on a roof"]) == 3 + 5   # "," is a token of its own
    assert token_counter(Target(ref="x", label="x", space=object())) is None
