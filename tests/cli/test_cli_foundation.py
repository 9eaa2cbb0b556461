"""The CLI verbs of the foundation, in process (typer's runner) and as a real process."""

import json
import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from freebind_cli.main import app

runner = CliRunner()
PAPER = "IB + d(InternVL) + c(CLAP_g, CLAP_m, a=0.8, t=0.5)"


def test_plan_shows_two_bonds_three_jobs():
    result = runner.invoke(app, ["plan", PAPER], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "b1 displacement" in result.output and "b2 combination" in result.output
    assert "3 projector job(s)" in result.output
    for row in ("IB → InternVL", "CLAP_g → IB + d(InternVL)", "CLAP_m → IB + d(InternVL)"):
        assert row in result.output


def test_plan_json_is_the_same_as_data():
    result = runner.invoke(app, ["plan", PAPER, "--json"])
    data = json.loads(result.stdout)
    assert data["expression"] == PAPER
    assert [(j["source"], j["target"]) for j in data["jobs"]] == [
        ("IB", "InternVL"), ("CLAP_g", "IB + d(InternVL)"), ("CLAP_m", "IB + d(InternVL)")]
    assert len(data["graph"]["bonds"]) == 2


def test_malformed_expression_exits_2_with_caret_and_no_traceback():
    for expr in ("IB + c(CLAP", "IB + d(InternVL, CLAP)", "", "IB + c(CLAP, a=2)",
                 "IB + c(CLAPP)", "IB + c(CLAP) junk"):
        result = runner.invoke(app, ["plan", expr])
        assert result.exit_code == 2, (expr, result.output)
        assert "^" in result.stderr and "Traceback" not in result.output + result.stderr
        assert result.stderr.startswith("error: ")


def test_real_process_exit_code():
    proc = subprocess.run([sys.executable, "-m", "freebind_cli.main", "plan", "IB + c()"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "needs an expert" in proc.stderr and "Traceback" not in proc.stderr


def test_spaces_lists_paper_spaces():
    result = runner.invoke(app, ["spaces", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["IB"]["dim"] == 1024 and {"audio", "image", "text"} <= set(rows["IB"]["modalities"])
    assert rows["InternVL"]["modalities"] == ["image", "text"] and rows["InternVL"]["dim"] == 768
    assert rows["CLAP_g"]["dim"] == 512 and "CLAP" in rows["CLAP_g"]["aliases"]
    assert rows["CLAP_m"]["modalities"] == ["audio", "text"]


def test_info_reads_a_bundle(tmp_path):
    from tests.fusion.test_bundle import make_space

    path = make_space().save(tmp_path / "b.safetensors")
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["expression"].startswith("mini:bind + d(mini:vl)")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1 and "not a safetensors file" in result.stderr


#: Encoder libraries that ``freebind --help``, ``plan`` and ``spaces`` must not import.
HEAVY = ("torch", "open_clip", "laion_clap", "imagebind", "transformers", "torchaudio",
         "torchvision")


def test_help_and_plan_do_not_import_heavy_libraries():
    script = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from freebind_cli.main import app
        for words in (["--help"], ["plan", "IB + d(InternVL)"], ["spaces"]):
            CliRunner().invoke(app, words)
        print(",".join(m for m in {HEAVY!r} if m in sys.modules))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_version_and_bare_command():
    import freebind

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"freebind {freebind.__version__}"
    result = runner.invoke(app, [])
    assert result.exit_code == 0 and "plan" in result.stdout and "build" in result.stdout
