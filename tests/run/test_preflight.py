"""Pre-flight checks: libraries (naming the extra), then weights (naming the file and
`freebind download`), then inputs (naming the flags), all in one message before any work;
weight files that cannot be read say to download them again, never to load unsafely."""

import pytest
import torch
from typer.testing import CliRunner

from freebind.util.errors import SpaceError
from freebind.run.preflight import PreflightError, Problem, raise_if
from freebind.spaces import weights
from freebind_cli.main import app


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def no_transformers(monkeypatch, home):
    """A core install: transformers (CLAP, InternVL, minilm) is missing; offline."""
    real = weights.package_available

    def fake(*names):
        if "transformers" in names:
            return False, "transformers"
        return real(*names)

    monkeypatch.setattr(weights, "package_available", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_build_reports_libraries_then_weights_then_pools_in_one_message(no_transformers):
    r = cli("build", "IB + d(InternVL) + c(CLAP)")
    assert r.exit_code == 1 and "Traceback" not in r.output    # this machine lacks things
    lines = r.output.strip().splitlines()
    assert lines[0] == "error: cannot build IB + d(InternVL) + c(CLAP), 4 problems:"
    assert "1. InternVL needs a library" in lines[1] and "freebind[internvl]" in lines[1]
    assert "2. CLAP needs a library" in lines[2] and "freebind[clap]" in lines[2]
    assert lines[3].startswith("  3. IB: weights missing") and "imagebind_huge.pth" in lines[3]
    assert "`freebind download IB`" in lines[3]
    assert lines[4].startswith("  4. no pools given: pass --audio DIR, --image DIR, --texts "
                               "FILE or --pools FILE")


def test_missing_pool_paths_are_listed_with_their_flags(home):
    r = cli("build", "mini:bind + c(mini:clap)", "--audio", "nope", "--texts", "none.txt")
    assert r.exit_code == 2
    assert "--audio nope: no such file or folder" in r.output
    assert "--texts none.txt: no such file or folder" in r.output
    # the old spelling of --texts still works, unlisted
    r = cli("build", "mini:bind + c(mini:clap)", "--text", "none.txt")
    assert r.exit_code == 2 and "--texts none.txt: no such file" in r.output
    assert "--text " not in cli("build", "--help").output


def test_embed_and_eval_check_spaces_before_inputs(no_transformers):
    r = cli("embed", "CLAP", "missing_folder", "-o", "out")
    assert r.exit_code == 1
    out = r.output
    assert "freebind[clap]" in out and "PATH missing_folder: no such file or folder" in out
    assert out.index("freebind[clap]") < out.index("missing_folder")
    r = cli("eval", "CLAP", "-s", "audiocaps")
    assert r.exit_code == 1
    assert "freebind[clap]" in r.output and "no data for suite audiocaps" in r.output
    assert "--data" in r.output


def test_download_names_the_extra_before_fetching(no_transformers, monkeypatch):
    import freebind.spaces as spaces

    monkeypatch.setattr(spaces, "prefetch", lambda ref: pytest.fail("downloaded"))
    r = cli("download", "minilm", "CLAP")
    assert r.exit_code == 1
    assert "pip install 'freebind[minilm]'" in r.output
    assert "pip install 'freebind[clap]'" in r.output
    assert "--without-libraries" in r.output


def test_empty_weights_file_is_reported_before_work(home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ib = home / "home" / "weights" / "imagebind" / "imagebind_huge.pth"
    ib.parent.mkdir(parents=True)
    ib.write_bytes(b"")
    r = cli("embed", "IB", home, "-o", "out")
    assert r.exit_code == 1
    assert "is empty (0 bytes)" in r.output and "freebind download IB" in r.output


def test_unreadable_weights_say_download_again_never_load_unsafely(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(100)}, good)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:300])
    (tmp_path / "junk.pth").write_bytes(b"junk" * 50)
    for name, want in (("empty.pth", "is empty (0 bytes)"),
                       ("cut.pth", "damaged or incomplete"),
                       ("junk.pth", "damaged or incomplete")):
        with pytest.raises(SpaceError) as err:
            weights.load_state_dict(tmp_path / name, "ImageBind weights")
        text = str(err.value)
        assert want in text and "download it again" in text, text
        assert "weights_only" not in text and "Re-running" not in text, text
        assert "EOFError" not in text


def test_preflight_error_renders_every_problem_in_stage_order():
    with pytest.raises(PreflightError) as err:
        raise_if("build X", [Problem("input", "c"), Problem("library", "a"),
                             Problem("weights", "b")])
    assert err.value.render() == ("error: cannot build X, 3 problems:\n  1. a\n  2. b\n"
                                  "  3. c")
    assert str(err.value) == "cannot build X, 3 problems: (1) a; (2) b; (3) c"
    assert err.value.exit_code == 1            # a library is missing: not a usage error
    with pytest.raises(PreflightError) as err:
        raise_if("build X", [Problem("input", "c")])
    assert err.value.exit_code == 2 and err.value.render() == "error: cannot build X: c"
    raise_if("nothing", [])
