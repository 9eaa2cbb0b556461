"""Third-party families by plugin: a tiny distribution declaring an entry point in the group
``freebind.spaces`` is installed into a folder on ``sys.path`` (``pip install --target``);
freebind then resolves its prefix (info without weights), plans and builds with it, and
reports a broken plugin in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from build_world import register_world, write_world

import freebind
from freebind import spaces
from freebind.build.orchestrator import build
from freebind.util.errors import SpaceError

HYPER = {"hidden": 32, "epochs": 2, "batch": 32, "threads": 1}
PLUGIN = '''
"""A freebind plugin: the family ``demo:`` (audio-text spaces of the test world)."""
from freebind.spaces.protocol import SpaceInfo
from freebind.util.errors import SpaceError

EXAMPLE = "demo:at"
DIMS = {"at": 12, "wide": 20}


def resolve(spec, ref):
    if spec not in DIMS:
        raise SpaceError(f"{ref}: demo knows {', '.join(DIMS)}")
    return SpaceInfo(name=ref, family="demo", modalities=("audio", "text"), dim=DIMS[spec],
                     description="demo plugin space", licence="Apache-2.0",
                     loader="fbdemo_plugin:load", checker="fbdemo_plugin:check")


def check(info):
    return True, ""


def load(info, **options):
    from build_world import WorldSpace

    return WorldSpace(info.name, info.modalities, info.dim, {})
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The plugin built and installed with pip into a folder (no index, no network)."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "fbdemo_plugin.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "fbdemo-plugin"
        version = "0.1"
        [project.entry-points."freebind.spaces"]
        demo = "fbdemo_plugin"
        broken = "fbdemo_missing_module:resolve"
        open_clip = "fbdemo_plugin:resolve"
        [tool.setuptools]
        py-modules = ["fbdemo_plugin"]
        '''))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True)
    return target


@pytest.fixture
def with_plugin(installed, monkeypatch):
    spaces._ensure_catalog()  # the built-ins first: the copies below are restored after
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.setattr(spaces, "_FAMILIES", dict(spaces._FAMILIES))
    monkeypatch.setattr(spaces, "_PLUGINS", dict(spaces._PLUGINS))
    spaces._load_plugins()
    yield
    sys.modules.pop("fbdemo_plugin", None)


def test_a_plugin_family_resolves_without_loading(with_plugin):
    assert spaces.plugins()["demo"] == ("fbdemo-plugin", "fbdemo_plugin")
    assert ("demo", "demo:SPEC", "fbdemo-plugin") in spaces.prefixes()
    info = spaces.info("demo:wide")
    assert (info.family, info.dim, info.modalities, info.licence) == (
        "demo", 20, ("audio", "text"), "Apache-2.0")
    assert freebind.plan("mini:bind + c(demo:at)").spaces["demo:at"]["dim"] == 12
    with pytest.raises(SpaceError, match="demo knows at, wide"):
        spaces.info("demo:nope")
    with pytest.raises(SpaceError, match=r"plugin family 'broken' \(fbdemo-plugin, entry point "
                                         r"fbdemo_missing_module:resolve\) cannot be imported"):
        spaces.info("broken:x")
    # a built-in prefix is never taken over by a plugin
    assert "open_clip" not in spaces.plugins()


def test_build_with_a_plugin_space(with_plugin, home):
    register_world()
    world = home / "w"
    write_world(world, n=60)
    bundle = build("test:base + c(demo:at)", pools=world, output=home / "b.safetensors",
                   cache_dir=home / "c", hyper=HYPER, progress=False)
    assert bundle.dim == 24 and bundle.plan.spaces["demo:at"]["family"] == "demo"
    texts = ["caption 3", "caption 17"]
    fused = freebind.load(home / "b.safetensors")
    rows = fused.encode("text", texts).numpy()
    base = spaces.get("test:base").encode("text", texts).numpy()
    assert rows.shape == (2, 24) and not np.allclose(rows, base, atol=1e-3)
    np.testing.assert_allclose(fused.with_factors("t=0").encode("text", texts).numpy(), base,
                               rtol=1e-5, atol=1e-6)
