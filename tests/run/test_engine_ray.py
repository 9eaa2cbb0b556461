"""The ray engine on a local Ray (CPU, started and stopped by this module): the same
partitions, store shards and bundle as the local engine; a SIGKILLed worker and a killed
driver change nothing in the output, and a rerun re-encodes nothing that was finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ray.data")

HERE = Path(__file__).resolve().parents[1] / "support"
sys.path.insert(0, str(HERE))
from build_world import register_world, world_folder  # noqa: E402
from ray_world import actor_pids  # noqa: E402
from tests.run.test_engines import files_of, store_of  # noqa: E402

from freebind import spaces  # noqa: E402
from freebind_cli.main import app  # noqa: E402

MINI_OK = all(spaces.info(n).check()[0] for n in ("mini:bind", "mini:clap"))
needs_mini = pytest.mark.skipif(not MINI_OK, reason="mini weights not present")
#: the test world's encoders sleep this long per call (in every process), so a run lasts
#: long enough to kill something in the middle of it
DELAY = 0.05
WORKERS = ["--workers", "2", "--cpus-per-worker", "0.5"]
RAY_KW = {"workers": 2, "cpus_per_worker": 0.5, "setup": "ray_world:setup"}


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """A local Ray for this module: 2 CPUs, a small object store, its own temp dir. Its
    workers inherit the environment set here: the tests folder on the path (for the
    setup hook that registers the test world), the slow test encoders and their log."""
    import ray

    log = tmp_path_factory.mktemp("log") / "encoded.log"
    env = {"RAY_AUTH_MODE": "disabled", "FREEBIND_TEST_DELAY": str(DELAY),
           "FREEBIND_TEST_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), logging_level="ERROR")
    register_world()
    try:
        yield {"address": ray.get_runtime_context().gcs_address, "log": log}
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def encoded(log: Path) -> int:
    return sum(int(x) for x in log.read_text().split()) if log.is_file() else 0


@pytest.fixture(scope="module")
def mini_pools(tmp_path_factory):
    from freebind.mini import write_pools

    root = tmp_path_factory.mktemp("mini")
    write_pools(root, n_audio=50, n_image=40, n_text=40, seed=0, progress=False)
    (root / "audio" / "zz_truncated.wav").write_bytes(b"RIFF\x00\x00")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_folder(tmp_path_factory, n=160)


@needs_mini
def test_embed_on_ray_equals_local_byte_for_byte(ray_local, mini_pools, tmp_path):
    args = ["embed", "mini:bind", str(mini_pools / "audio"), str(mini_pools / "image"),
            "--texts", str(mini_pools / "texts.txt"), "--partition-size", "30",
            "--shard-size", "16", "--batch-size", "8"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local"), "--cache-dir",
                                     str(tmp_path / "c1"), "--json"])
    assert local.exit_code == 0, local.output
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ray"), "--cache-dir",
                                 str(tmp_path / "c2"), "--engine", "ray", *WORKERS, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    # the truncated file is skipped with the local engine's reason
    assert rep["skipped"] == json.loads(local.stdout)["skipped"] != []
    assert [s["path"] for s in rep["skipped"]] == [str(mini_pools / "audio" /
                                                       "zz_truncated.wav")]
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    assert store_of(tmp_path / "c2") == store_of(tmp_path / "c1")
    eng = rep["engine"]
    assert eng["engine"] == "ray" and eng["written"] == eng["chunks"] == 10
    assert sum(w["items"] for w in eng["workers"]) == 131  # 51 audio, 40 image, 40 text
    assert sum(w["failures"] for w in eng["workers"]) == 1
    # the table printed without --json: one row per worker
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "ray"), "--cache-dir",
                                 str(tmp_path / "c2"), "--engine", "ray", *WORKERS])
    assert r.exit_code == 0 and "0 partition(s) written, 6 kept" in r.output


@needs_mini
def test_build_on_ray_gives_the_same_bundle(ray_local, mini_pools, tmp_path):
    from freebind.build.orchestrator import build

    expr = "mini:bind + c(mini:clap)"
    kw = dict(pools=mini_pools, hyper={"epochs": 1, "hidden": 32}, progress=False,
              batch_size=16)
    a = build(expr, output=tmp_path / "a.safetensors", cache_dir=tmp_path / "c1", **kw)
    b = build(expr, output=tmp_path / "b.safetensors", cache_dir=tmp_path / "c2",
              engine="ray", workers=2, cpus_per_worker=0.5, **kw)
    bundle_a, bundle_b = (tmp_path / "a.safetensors"), (tmp_path / "b.safetensors")
    assert bundle_a.read_bytes() == bundle_b.read_bytes()
    ra, rb = a.build_report, b.build_report
    assert rb.engine["engine"] == "ray" and rb.engine["written"] > 0
    assert (ra.encoded, ra.reused, ra.skipped) == (rb.encoded, rb.reused, rb.skipped)
    assert store_of(tmp_path / "c2") == store_of(tmp_path / "c1")


def test_a_worker_killed_mid_run_changes_nothing(ray_local, world, tmp_path):
    from freebind.run.partitions import embed

    kw = dict(cache_dir=None, shard_size=8, batch_size=4, partition_size=80, progress=False)
    want = embed("test:base", [world / "image"], output=tmp_path / "local",
                 **{**kw, "cache_dir": tmp_path / "c1"})
    cache = tmp_path / "c2"
    killed = []

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and len(list(cache.rglob("shard-*.npz"))) < 3:
            time.sleep(0.01)
        pids = actor_pids()
        if pids:
            shards = len(list(cache.rglob("shard-*.npz")))
            os.kill(pids[0], signal.SIGKILL)
            killed.append(shards)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    got = embed("test:base", [world / "image"], output=tmp_path / "ray",
                **{**kw, "cache_dir": cache}, engine="ray", engine_options=RAY_KW)
    thread.join(5)
    assert killed and killed[0] < 20  # killed while most chunks were still to do
    assert got.engine["written"] == 20 and got.rows == want.rows == 160
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    assert store_of(cache) == store_of(tmp_path / "c1")


@pytest.mark.slow
def test_a_killed_driver_reruns_without_reencoding_what_was_finished(ray_local, world,
                                                                     tmp_path):
    from freebind.run.partitions import embed

    kw = dict(shard_size=8, batch_size=4, partition_size=40, progress=False)
    out, cache = tmp_path / "ray", tmp_path / "cache"
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from build_world import register_world
        register_world()
        from freebind.run.partitions import embed
        embed("test:base", [{str(world / "image")!r}], output={str(out)!r},
              cache_dir={str(cache)!r}, engine="ray",
              engine_options={{**{RAY_KW!r}, "ray_address": {ray_local["address"]!r}}},
              **{kw!r})
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if len(list(cache.rglob("shard-*.npz"))) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    deadline = time.time() + 60  # the dead driver's actors go with it
    while actor_pids() and time.time() < deadline:
        time.sleep(0.2)
    shards = list(cache.rglob("shard-*.npz"))
    finished = sum(len(np.load(p)["keys"]) for p in shards)
    assert 3 <= len(shards) < 20 and not (out / "image_emb" / "image_emb_3.npy").exists()

    before = encoded(ray_local["log"])
    got = embed("test:base", [world / "image"], output=out, cache_dir=cache, engine="ray",
                engine_options=RAY_KW, **kw)
    assert encoded(ray_local["log"]) - before == 160 - finished  # nothing finished redone
    assert got.engine["done_before"] == len(shards)
    assert got.engine["encoded"] == 160 - finished
    want = embed("test:base", [world / "image"], output=tmp_path / "local",
                 cache_dir=tmp_path / "c1", **kw)
    assert files_of(out).keys() == files_of(tmp_path / "local").keys()
    for name, data in files_of(tmp_path / "local").items():
        if name != "embed.json":
            assert files_of(out)[name] == data, name
    assert store_of(cache) == store_of(tmp_path / "c1")
    assert want.rows == got.rows == 160
