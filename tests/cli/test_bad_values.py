"""Every verb, driven with bad values of every option it takes, generated from the CLI's own
option table (click introspection): each ends before any work with exactly one line on
stderr that names the option or the value, and the documented exit code
(:data:`freebind_cli.errors.EXIT_CODES`: 2 the command line is wrong, 1 this machine cannot
do it). A new option must get a bad value here or a reason in NO_BAD_VALUE."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli_walk import commands
from freebind_cli.errors import EXIT_CODES, FAILED, USAGE
from freebind_cli.main import app
from freebind_cli.options import PATH_KINDS

runner = CliRunner()

#: options no value of which is wrong in itself (any text is a text, a host name, …): what
#: would make them wrong is another input they name, tested by the verbs' own tests
NO_BAD_VALUE = {
    ("build", "--audio-column"), ("build", "--image-column"), ("build", "--text-column"),
    ("embed", "--audio-column"), ("embed", "--image-column"), ("embed", "--text-column"),
    ("embed", "--preset"), ("eval", "--preset"), ("index", "--preset"),
    ("search", "--preset"), ("export", "--preset"),
    ("import", "--weights-digest"), ("index", "--target"), ("index", "--caption-column"),
    ("search", "--text"), ("tune", "--name"), ("push", "--license"), ("api", "--model"),
    ("build", "--ray-address"), ("embed", "--ray-address"),
    ("serve", "--host"), ("api", "--host"), ("serve", "--allowed-host"),
    ("api", "--allowed-host"),
    # pools may be shard patterns ('shards/{000000..000099}.tar'): tested below by name
    ("build", "--audio"), ("build", "--image"), ("build", "--texts"),
    # a brace pattern of shards: those missing are reported by the import (--allow-missing)
    ("import", "--shards"),
    # a query file: the one-query rule is checked first (tests/cli/test_search_cli.py)
    ("search", "--audio"), ("search", "--image"), ("search", "--point"),
}

#: bad values of options whose type says nothing of what they accept: (value, code)
BY_FLAG = {
    "--hyper": [("bogus=1", USAGE), ("epochs=abc", USAGE), ("lr=-1", USAGE),
                ("epochs=0", USAGE), ("noequals", USAGE)],
    "--space-option": [("noequals", USAGE)],
    "--api-key": [("short", USAGE)],
    "--to": [("bogus://x", USAGE)],
    "--option": [("noequals", USAGE)],
    "--factor": [("zz=0.5", USAGE)],
    "--grid": [("a=1:0:x", USAGE)],
    "--suite": [("audiocapz", USAGE)],
    "--device": [("gpu", USAGE), ("cuda:99", FAILED)],
    "--precision": [("fp64", USAGE)],
    "--store-dtype": [("fp64", USAGE)],
    "--engine": [("spark", USAGE)],
    "--shard": [("3/2", USAGE), ("x", USAGE)],
    "--metadata-format": [("xml", USAGE)],
    "--as": [("smell", USAGE)],
    "--modality": [("smell", USAGE)],
    "--format": [("tflite", USAGE)],
    "--variant": [("imagebind+++", USAGE)],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs of the right kind: an empty folder (no index, no embeddings: a verb that got
    past a bad value fails at once, on another line), a mini bundle (one epoch), a text
    file."""
    from freebind.build.orchestrator import build

    root = tmp_path_factory.mktemp("bad-values")
    (root / "empty").mkdir()
    build("mini:bind + d(mini:vl)", output=str(root / "fake.safetensors"), mini_pool_size=64,
          hyper={"epochs": 1, "hidden": 16}, progress=False, cache_dir=str(root / "cache"))
    (root / "texts.txt").write_text("a dog barks\n")
    (root / "a-file").write_text("x")
    (root / "a-folder").mkdir()
    return root


def bases(w) -> dict[str, list[str]]:
    """A command line per verb, whose work would fail at once (or is tiny) if a bad value
    got through: the bad value's own line must come first."""
    bundle, empty = str(w / "fake.safetensors"), str(w / "empty")
    return {
        "plan": ["plan", "mini:bind"], "spaces": ["spaces"], "info": ["info", bundle],
        "build": ["build", "mini:bind + d(mini:vl)", "-o", str(w / "b.safetensors"),
                  "--mini-pool-size", "8", "--cache-dir", str(w / "cache")],
        "embed": ["embed", "mini:bind", str(w / "texts.txt"), "-o", str(w / "emb")],
        "import": ["import", "mini:bind", str(w / "texts.txt")],
        "eval": ["eval", bundle, "-s", "coco", "-o", ""],
        "tune": ["tune", bundle, "-s", "coco"],
        "index": ["index", empty, "-o", str(w / "idx")],
        "search": ["search", empty, "--text", "a dog"],
        "serve": ["serve", empty], "api": ["api", bundle],
        "download": ["download", "mini:bind"],
        "convert": ["convert", empty, "-o", str(w / "c.safetensors")],
        "push": ["push", bundle, "org/name", "--dry-run", str(w / "dry")],
        "export": ["export", bundle, "-o", str(w / "f.onnx")],
        "mini pools": ["mini", "pools", str(w / "pools"), "--audio", "2", "--image", "2",
                       "--text", "2"],
        "mini evalsets": ["mini", "evalsets", str(w / "ev"), "--suite", "coco"],
        "mini roles": ["mini", "roles", "--items", "20"],
    }


def option_table():
    """(verb, option) for every option of every verb, from the CLI itself."""
    return [(" ".join(path), p) for path, cmd, ctx in commands() for p in cmd.get_params(ctx)
            if p.param_type_name == "option" and p.name != "help"]


def _path_values(kind: str, w) -> list[str]:
    return {"file": [str(w / "nope.txt"), str(w / "a-folder")],
            "folder": [str(w / "nope"), str(w / "a-file")],
            "exists": [str(w / "nope")],
            "folder-out": [str(w / "a-file")], "cache": [str(w / "a-file")],
            "template-out": [str(w / "a-file"), "split=val"],
            "file-out": [str(w / "a-folder")],
            "bundle": [str(w / "a-folder"), str(w / "out.txt")]}[kind]


def bad_values(verb: str, param, w) -> list[tuple[list[str], int]]:
    """The bad command-line pieces for one option, each with its exit code."""
    flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
    if getattr(param, "is_flag", False):
        return [([f"{flag}=yes"], USAGE)]
    kind = next((PATH_KINDS.get(verb, {})[o] for o in param.opts
                 if o in PATH_KINDS.get(verb, {})), None)
    if kind:
        return [([flag, v], USAGE) for v in _path_values(kind, w)]
    if flag in BY_FLAG:
        return [([flag, v], code) for v, code in BY_FLAG[flag]]
    annotation = param.type_descriptor.annotation
    if annotation in (int, float):
        values = ["abc"] + (["1.5"] if annotation is int else [])
        if param.min is not None:
            values.append(str(param.min - 1))
        return [([flag, v], USAGE) for v in values]
    return []


def cases(w):
    table, found, missing = bases(w), [], []
    for verb, param in option_table():
        values = bad_values(verb, param, w)
        flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if not values and (verb, flag) not in NO_BAD_VALUE:
            missing.append(f"{verb} {flag}")
        for piece, code in values:
            found.append((verb, param, table[verb] + piece, code))
    return found, missing


def test_every_option_has_a_bad_value_or_a_reason(world):
    found, missing = cases(world)
    assert not missing, f"options with no bad value and no reason: {missing}"
    assert len({(v, p.name) for v, p, _, _ in found}) > 120     # the whole table, not a few


def test_documented_codes():
    assert set(EXIT_CODES) == {0, 1, 2, 130}


def test_every_verb_refuses_every_bad_value_in_one_line(world, tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    found, _ = cases(world)
    wrong = []
    for verb, param, args, code in found:
        r = runner.invoke(app, args, env={"COLUMNS": "80"})
        lines = r.stderr.splitlines()
        value = args[-1].split("=", 1)[-1] if args[-1].startswith("--") else args[-1]
        named = any(o in r.stderr for o in param.opts) or value in r.stderr
        if r.exit_code != code or len(lines) != 1 or not lines[0].startswith("error: ") \
                or not named or "Traceback" in r.output:
            wrong.append(f"{' '.join(args[len(bases(world)[verb]):])} ({verb}): "
                         f"exit {r.exit_code}, want {code}: {r.stderr.strip()[:300]}")
    assert not wrong, "\n".join(wrong)
