"""`freebind eval` on the mini world: its spaces on its evaluation sets, as the README shows."""

import json

import pytest
from typer.testing import CliRunner

from freebind_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def evalsets(tmp_path_factory):
    from freebind.mini import write_evalsets

    root = tmp_path_factory.mktemp("evalsets")
    write_evalsets(root, seed=0, suites=["audiocaps", "vggss"], items=100)
    return root


def test_eval_mini_spaces_side_by_side(evalsets, tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    args = ["eval", "mini:bind", "mini:clap", "--suite", "audiocaps", "--data",
            str(evalsets / "audiocaps"), "--json", "--output", str(tmp_path / "{model}.json")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = {x["model"]: x["metrics"] for x in json.loads(r.stdout)}
    chance = 1 / 100
    # the roles of the mini world: the audio-text expert beats the unified space on audio-text
    assert recs["mini:clap"]["t2a_R@1"] > 2 * recs["mini:bind"]["t2a_R@1"]
    assert recs["mini:clap"]["t2a_R@1"] > 5 * chance
    assert (tmp_path / "mini_bind.json").is_file() and (tmp_path / "mini_clap.json").is_file()
    again = runner.invoke(app, args)
    assert all(x["encoded"] == 0 for x in json.loads(again.stdout))


def test_eval_mini_bind_audio_image(evalsets, tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    r = runner.invoke(app, ["eval", "mini:bind", "-s", "vggss", "-d", str(evalsets / "vggss"),
                            "--output", ""], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    # one suite: the metric names head the columns in two lines (direction, metric)
    assert "freebind eval: vggss (%)" in r.stdout
    assert all(w in r.stdout for w in ("a2i", "i2a", "R@1", "R@10", "mAP@10"))
    r = runner.invoke(app, ["eval", "mini:bind", "-s", "vggss", "-d", str(evalsets / "vggss"),
                            "--output", "", "--json"])
    m = json.loads(r.stdout)[0]["metrics"]
    assert m["a2i_R@1"] > 5 / 100 and m["i2a_R@1"] > 5 / 100     # far above chance (1/100)


def test_cli_and_api_give_equal_metrics_on_the_mini_world(evalsets, tmp_path, monkeypatch):
    import freebind

    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    for targets, suites in ((["mini:bind", "mini:clap"], ["audiocaps"]),
                            (["mini:bind"], ["audiocaps", "vggss"])):
        r = runner.invoke(app, ["eval", *targets, *[a for s in suites for a in ("-s", s)],
                                "-d", str(evalsets), "--json", "--output", ""])
        assert r.exit_code == 0, r.output
        cli = [(x["model"], x["dataset"], x["metrics"]) for x in json.loads(r.stdout)]
        recs = freebind.evaluate(targets, suites, [evalsets], progress=False,
                                 cache_dir=tmp_path / f"fresh-{len(targets)}")
        api = [(x["model"], x["dataset"], x["metrics"]) for x in recs]
        assert len(cli) == 2 and cli == api
