"""``freebind eval``: the verb parses its arguments into one ``freebind.evaluate`` call and
prints a table (or ``--json``); errors are one line with exit 2. What evaluation computes is
tested on the library (test_eval.py)."""

import json

from typer.testing import CliRunner

import freebind.evaluate.entrypoints as api
from freebind_cli.main import app
from tests.evaluate.test_eval import make_audiocaps, make_bundle, make_esc50, make_vggss  # noqa: F401

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "220"})
    return result


def test_eval_table_and_several_suites_under_one_root(home):
    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    make_vggss(home / "sets" / "vggss")
    r = run("eval", "test:tone", "test:half", "-s", "audiocaps", "-s", "esc50", "-s", "vggss",
            "-d", home / "sets", "--output", "")
    assert r.exit_code == 0, r.output
    assert "audiocaps" in r.stdout and "t2a_R@1" in r.stdout and "acc1" in r.stdout
    assert "a2i_R@1" in r.stdout and "100.0" in r.stdout
    assert not (home / "results").exists()


def test_eval_errors_are_one_line(home):
    data = make_audiocaps(home / "ac")
    r = run("eval", "test:tone", "-s", "nosuch", "-d", data)
    assert r.exit_code == 2 and "unknown suite" in r.output and "Traceback" not in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", home / "nowhere")
    assert r.exit_code == 2 and "--data" in r.output and "no such file or folder" in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "-f", "a=0.5")
    assert r.exit_code == 2 and "plain space" in r.output
    make_vggss(home / "vg")
    r = run("eval", "test:expert", "-s", "vggss", "-d", home / "vg")
    assert r.exit_code == 2 and "no image modality" in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "--option", "split")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "--option", "folds=1")
    assert r.exit_code == 2 and "no chosen suite takes it" in r.output


def test_flags_become_the_library_call(home, monkeypatch):
    seen = {}

    def fake(targets, suites, data, **kw):
        seen.update(targets=targets, suites=suites, data=data, **kw)
        return []

    monkeypatch.setattr(api, "evaluate", fake)
    (home / "sets").mkdir()
    r = run("eval", "a.safetensors@x", "mini:bind", "-s", "audiocaps", "-s", "coco", "-d",
            home / "sets", "-f", "a=0.8", "-p", "versatile", "--option", "split=val", "--cache-dir",
            home / "c", "--batch-size", "3", "--record", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    warn = seen.pop("warn")
    assert callable(warn)
    assert seen == {"targets": ["a.safetensors@x", "mini:bind"], "suites": ["audiocaps", "coco"],
                    "data": [home / "sets"], "factors": ["a=0.8"], "preset": "versatile",
                    "suite_options": {"split": "val"}, "output": "results/{model}/{dataset}.json",
                    "record": True, "cache_dir": home / "c", "batch_size": 3, "progress": False,
                    "space_options": {"device": "cpu"}}
    seen.clear()
    run("eval", "mini:bind", "-s", "audiocaps", "-d", home, "--output", "")
    assert seen["output"] is None and seen["progress"] is True
    # -o is the output, as in every verb (it was --option here)
    r = run("eval", "mini:bind", "-s", "audiocaps", "-d", home, "-o", "out", "--json")
    assert r.exit_code == 0, r.output
    assert seen["output"] == "out" and seen["suite_options"] == {}
    r = run("eval", "--help")
    assert "--cache " not in r.stdout and "-o" in r.stdout
    # the old meaning of -o is caught, not turned into a folder named split=val
    r = run("eval", "mini:bind", "-s", "audiocaps", "-d", home, "-o", "split=val")
    assert r.exit_code == 2 and "--option split=val" in r.output


def test_json_is_the_library_records(home):
    import freebind

    data = make_audiocaps(home / "ac")
    r = run("eval", "test:tone", "test:half", "-s", "audiocaps", "-d", data, "--json",
            "--output", "")
    assert r.exit_code == 0, r.output
    want = freebind.evaluate(["test:tone", "test:half"], ["audiocaps"], [data], progress=False)
    got = json.loads(r.stdout)
    assert [g["metrics"] for g in got] == [w["metrics"] for w in want]
    assert [g["model"] for g in got] == ["test:tone", "test:half"]
