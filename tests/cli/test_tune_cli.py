"""``freebind tune``: the verb parses its arguments into one ``freebind.tune`` call and prints
the coarse and fine tables (or ``--json``); errors are one line with exit 2. What tuning
computes is tested on the library (test_tune.py)."""

import json

import freebind.evaluate.entrypoints as api
from tests.evaluate.test_eval import make_audiocaps, make_bundle, run  # noqa: F401


def test_tune_table_output_and_errors(home):
    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    r = run("tune", bundle, "-s", "audiocaps", "-d", home / "ac", "--grid", "a=0,1",
            "--no-save", "--out", home / "o")
    assert r.exit_code == 0, r.output
    assert "coarse" in r.stdout and "tuned-versatile" in r.stdout
    import freebind

    assert "tuned-versatile" not in freebind.load(bundle).presets
    r = run("tune", "test:tone", "-s", "audiocaps", "-d", home / "ac")
    assert r.exit_code == 2 and "needs a bundle" in r.output
    r = run("tune", bundle, "-s", "audiocaps", "-d", home / "ac", "--grid", "zz=0:1:0.5")
    assert r.exit_code == 2 and "zz" in r.output and "Traceback" not in r.output


def test_json_is_the_summary(home):
    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    r = run("tune", bundle, "-s", "audiocaps", "-d", home / "ac", "--grid", "a=0,1",
            "--no-save", "--out", home / "o", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads((home / "o" / "tune.json").read_text())


def test_flags_become_the_library_call(home, monkeypatch):
    seen = {}

    class Result:
        summary = {"ok": 1}

    def fake(bundle, suites, data, grids, **kw):
        seen.update(bundle=bundle, suites=suites, data=data, grids=grids, **kw)
        return Result()

    monkeypatch.setattr(api, "tune", fake)
    (home / "ac").mkdir()
    r = run("tune", home / "b.safetensors", "-s", "audiocaps", "-d", home / "ac", "-g",
            "a=0:1:0.5", "-g", "t=0,1", "--option", "split=val", "-o", home / "o", "--name", "mine",
            "--no-save", "--cache-dir", home / "c", "--batch-size", "4", "--json",
            "--precision", "fp32")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"ok": 1}
    assert seen == {"bundle": str(home / "b.safetensors"), "suites": ["audiocaps"],
                    "data": [home / "ac"], "grids": ["a=0:1:0.5", "t=0,1"],
                    "suite_options": {"split": "val"}, "out": home / "o", "name": "mine",
                    "save": False, "cache_dir": home / "c", "batch_size": 4, "progress": False,
                    "space_options": {"precision": "fp32"}}


def test_old_flag_spellings_are_hidden_aliases(home, monkeypatch):
    seen = {}

    class Result:
        summary = {"ok": 1}

    monkeypatch.setattr(api, "tune", lambda *a, **kw: seen.update(kw) or Result())
    r = run("tune", home / "b.safetensors", "-s", "audiocaps", "-d", home, "--out", home / "o",
            "--cache", home / "c", "--json")
    assert r.exit_code == 0, r.output
    assert seen["out"] == home / "o" and seen["cache_dir"] == home / "c"
    r = run("tune", home / "b.safetensors", f"--out={home / 'p'}", "-s", "audiocaps", "-d", home,
            "--json")
    assert seen["out"] == home / "p"
    helptext = run("tune", "--help").stdout
    assert "--output" in helptext and "--out " not in helptext and "--cache " not in helptext


def test_piped_report_names_grid_scope_and_cuts_nothing(home):
    """Piped (CliRunner's stdout is not a terminal, COLUMNS unset): nothing is cut."""
    from typer.testing import CliRunner

    from freebind_cli.main import app

    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "two.safetensors", "test:tone + d(test:expert) + c(test:expert)")
    r = CliRunner().invoke(app, ["tune", str(bundle), "-s", "audiocaps", "-d", str(home / "ac"),
                                 "--grid", "t=0,1", "--no-save", "-o", str(home / "o"),
                                 "--name", "tuned-custom-name"], env={"COLUMNS": None})
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    assert "audiocaps:t2a_R@1" in r.stdout and "audiocaps:a2t_R@1" in r.stdout
    assert "tuned-custom-name-audiocaps-t2a" in r.stdout
    assert "t= sets b1.text and b2.text together" in r.stdout


def test_info_prints_tables_not_python_dicts(home):
    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    assert run("eval", bundle, "-s", "audiocaps", "-d", home / "ac", "--record", "--json",
               "-o", "").exit_code == 0
    assert run("tune", bundle, "-s", "audiocaps", "-d", home / "ac", "--grid", "a=0,1",
               "-o", home / "o", "--json").exit_code == 0
    r = run("info", bundle)
    assert r.exit_code == 0, r.output
    assert "{'" not in r.stdout and "': " not in r.stdout
    for title in ("presets", "recorded evaluation (%)", "tuned presets (%)"):
        assert title in r.stdout, r.stdout
    assert "t2a_R@1 100.0" in r.stdout          # the test base space is perfect here
    meta = json.loads(run("info", bundle, "--json").stdout)
    assert set(meta["evaluation"]) == {"audiocaps"} and "tuning" in meta


def test_tune_says_what_it_replaced_and_info_shows_the_data(home):
    """A coarse-only run over presets tuned with a grid replaces the same suite's presets and
    says so, keeps another suite's; `info` names each preset's data and grid."""
    from tests.evaluate.test_eval import make_esc50

    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    bundle = make_bundle(home / "b.safetensors")
    r = run("tune", bundle, "-s", "audiocaps", "-s", "esc50", "-d", home / "sets", "--grid",
            "a=0,0.5,1", "-o", home / "o1")
    assert r.exit_code == 0, r.output
    assert "replaced" not in r.stdout
    small = home / "small" / "audiocaps"
    make_audiocaps(small, n=4)
    r = run("tune", bundle, "-s", "audiocaps", "-d", small, "-o", home / "o2")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    at = lines.index("replaced 3 preset(s) stored before (--name PREFIX keeps both):")
    replaced = sorted(line.split(":")[0].strip() for line in lines[at + 1:at + 4])
    assert replaced == ["tuned-audiocaps-a2t", "tuned-audiocaps-t2a", "tuned-versatile"]
    assert all("(was tuned on audiocaps, esc50, grid a)" in line for line in lines[at + 1:at + 4])
    info = run("info", bundle).stdout
    assert "tuned presets (%)" in info and "data the presets were tuned on" in info
    assert "tuned-esc50" in info and "12 audio, 18 text" in info
    assert "4 audio, 20 text" in info and str(small.resolve()) in info
    assert "a 3" in info and "5 points" in info and "coarse only" in info
    # the JSON summary says the same
    summary = json.loads((home / "o2" / "tune.json").read_text())
    assert sorted(summary["replaced"]) == replaced
    assert summary["data"]["audiocaps"]["items"] == {"audio": 4, "text": 20}
