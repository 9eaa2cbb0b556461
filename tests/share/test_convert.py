"""``freebind convert``: the authors' released projector folders (layout-exact fixtures made
here: ``<name>_Proj/<mode>/best.pt`` holding a ``Head2.mlps`` Linear–BN–ReLU–Linear–BN state
dict) become bundles whose fused embeddings equal the authors' computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from typer.testing import CliRunner

import freebind
from freebind.share.authors import DATA_MODES, ConvertError, convert, reference_outputs
from freebind.util.errors import UsageError

HIDDEN = 64  # the release uses 2048; the layout is the same, the fixtures stay small


class _ProjHead(nn.Module):
    def __init__(self, d_in, d_out, hidden):
        super().__init__()
        self.mlps = nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                  nn.Linear(hidden, d_out), nn.BatchNorm1d(d_out))

    def forward(self, x):
        return F.normalize(self.mlps(x), dim=-1)


class _ReleasedProjector(nn.Module):
    """The released projector's module structure (state-dict keys Head2.mlps.*)."""

    def __init__(self, d_in, d_out, hidden=HIDDEN):
        super().__init__()
        self.Head2 = _ProjHead(d_in, d_out, hidden)


def _write_group(root, name, d_in, d_out, seed):
    gen = torch.Generator().manual_seed(seed)
    modules = []
    for k, mode in enumerate(DATA_MODES):
        torch.manual_seed(seed * 100 + k)
        m = _ReleasedProjector(d_in, d_out)
        with torch.no_grad():  # non-trivial BatchNorm statistics
            for bn in (m.Head2.mlps[1], m.Head2.mlps[4]):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
        folder = root / name / mode
        folder.mkdir(parents=True)
        torch.save(m.state_dict(), folder / "best.pt")
        modules.append(m.eval())
    return modules


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("release") / "checkpoints"
    mods = {
        "IB_PP_G_Proj": _write_group(root, "IB_PP_G_Proj", 512, 1024, 1),
        "IB_PP_M_Proj": _write_group(root, "IB_PP_M_Proj", 512, 1024, 2),
        "InternVL_IB_Proj": _write_group(root, "InternVL_IB_Proj", 1024, 768, 3),
        "InternVL_IB_PP_G_Proj": _write_group(root, "InternVL_IB_PP_G_Proj", 512, 768, 4),
        "InternVL_IB_PP_M_Proj": _write_group(root, "InternVL_IB_PP_M_Proj", 512, 768, 5),
    }
    return root, mods


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _authors_mean(modules_and_inputs):
    """The released code: stack every projector's output, one mean, normalise."""
    outs = [m.Head2(x) for mods, x in modules_and_inputs for m in mods]
    return F.normalize(torch.stack(outs, dim=1).mean(dim=1), dim=-1)


def test_key_layout_of_fixture_is_the_released_one(release):
    root, _ = release
    keys = set(torch.load(root / "IB_PP_G_Proj" / "mix" / "best.pt", weights_only=True))
    assert {"Head2.mlps.0.weight", "Head2.mlps.0.bias", "Head2.mlps.1.running_var",
            "Head2.mlps.1.num_batches_tracked", "Head2.mlps.3.weight",
            "Head2.mlps.4.running_mean"} <= keys


def test_imagebind_pp_matches_the_released_code_with_every_preset(release, tmp_path):
    root, mods = release
    summary = convert(root.parent, "imagebind++", tmp_path / "ibpp.safetensors")
    assert summary["verified_max_abs_diff"] < 1e-5
    fused = freebind.load(tmp_path / "ibpp.safetensors")
    assert fused.name == "IB + c(CLAP_g, CLAP_m)" and fused.dim == 1024
    assert set(fused.presets) >= {"default", "versatile", "at-expertise", "authors"}
    emb = {"IB": {m: _unit(5, 1024, i) for i, m in enumerate(("audio", "image", "text"))},
           "CLAP_g": {m: _unit(5, 512, 10 + i) for i, m in enumerate(("audio", "text"))},
           "CLAP_m": {m: _unit(5, 512, 20 + i) for i, m in enumerate(("audio", "text"))}}
    with torch.no_grad():
        for preset, (a, t) in (("authors", (0.5, 0.5)), ("versatile", (0.5, 0.1)),
                               ("at-expertise", (0.8, 0.5))):
            out = fused.fuse(emb, preset=preset)
            for mod, f in (("audio", a), ("text", t)):
                ex = _authors_mean([(mods["IB_PP_G_Proj"], emb["CLAP_g"][mod]),
                                    (mods["IB_PP_M_Proj"], emb["CLAP_m"][mod])])
                ref = F.normalize(ex * f + emb["IB"][mod] * (1 - f), dim=-1)
                assert (out[mod] - ref).abs().max() < 1e-5, (preset, mod)
            assert torch.allclose(out["image"], emb["IB"]["image"])


def test_internvl_ib_displacement_matches_the_released_code(release, tmp_path):
    root, mods = release
    convert(root, "internvl_ib", tmp_path / "vlib.safetensors")
    fused = freebind.load(tmp_path / "vlib.safetensors")
    assert fused.dim == 768
    emb = {"IB": {m: _unit(4, 1024, i) for i, m in enumerate(("audio", "image", "text"))},
           "InternVL": {m: _unit(4, 768, 30 + i) for i, m in enumerate(("image", "text"))}}
    with torch.no_grad():
        out = fused.fuse(emb)  # the expression's own factors: image/text expert weight 0.8
        for mod in ("image", "text"):
            ex = _authors_mean([(mods["InternVL_IB_Proj"], emb["IB"][mod])])
            ref = F.normalize(ex * 0.2 + emb["InternVL"][mod] * 0.8, dim=-1)
            assert (out[mod] - ref).abs().max() < 1e-5
        audio = _authors_mean([(mods["InternVL_IB_Proj"], emb["IB"]["audio"])])
        assert (out["audio"] - audio).abs().max() < 1e-5


def test_internvl_ib_pp_and_reference_helper_agree(release, tmp_path):
    root, mods = release
    summary = convert(root, "internvl_ib++", tmp_path / "vlibpp.safetensors")
    assert [r["folder"] for r in summary["jobs"]] == [
        "InternVL_IB_Proj", "InternVL_IB_PP_G_Proj", "InternVL_IB_PP_M_Proj"]
    fused = freebind.load(tmp_path / "vlibpp.safetensors")
    assert fused.presets["authors"] == ["b1.image=0.8", "b1.text=0.8", "b2.audio=0.5",
                                        "b2.text=0.1"]
    assert fused.metadata["source"]["variant"] == "internvl_ib++"
    assert len(fused.metadata["source"]["release_files_sha256"]) == 21
    emb = {"IB": {m: _unit(3, 1024, i) for i, m in enumerate(("audio", "image", "text"))},
           "InternVL": {m: _unit(3, 768, 40 + i) for i, m in enumerate(("image", "text"))},
           "CLAP_g": {m: _unit(3, 512, 50 + i) for i, m in enumerate(("audio", "text"))},
           "CLAP_m": {m: _unit(3, 512, 60 + i) for i, m in enumerate(("audio", "text"))}}
    with torch.no_grad():
        out = fused.fuse(emb, preset="authors")
        # text: InternVL_IB's text (displacement, λ=0.8) combined with CLAP at t=0.1
        vl_text = F.normalize(_authors_mean([(mods["InternVL_IB_Proj"], emb["IB"]["text"])])
                              * 0.2 + emb["InternVL"]["text"] * 0.8, dim=-1)
        ex = _authors_mean([(mods["InternVL_IB_PP_G_Proj"], emb["CLAP_g"]["text"]),
                            (mods["InternVL_IB_PP_M_Proj"], emb["CLAP_m"]["text"])])
        ref_text = F.normalize(ex * 0.1 + vl_text * 0.9, dim=-1)
        assert (out["text"] - ref_text).abs().max() < 1e-5
        ref = reference_outputs("internvl_ib++", fused.projectors, emb,
                                {"d.image": 0.8, "d.text": 0.8, "audio": 0.5, "text": 0.1})
        for m in ("audio", "image", "text"):
            assert (out[m] - ref[m]).abs().max() < 1e-5


def test_incomplete_release_and_bad_layout_are_clear(release, tmp_path):
    root, _ = release
    partial = tmp_path / "partial"
    (partial / "IB_PP_G_Proj" / "mix").mkdir(parents=True)
    (partial / "IB_PP_G_Proj" / "mix" / "best.pt").write_bytes(
        (root / "IB_PP_G_Proj" / "mix" / "best.pt").read_bytes())
    with pytest.raises(ConvertError, match=r"IB_PP_G_Proj/A/best.pt: missing"):
        convert(partial, "imagebind++", tmp_path / "x.safetensors")
    wrong = tmp_path / "wrong"
    for mode in DATA_MODES:
        (wrong / "InternVL_IB_Proj" / mode).mkdir(parents=True)
        torch.save({"fc.weight": torch.zeros(2, 2)}, wrong / "InternVL_IB_Proj" / mode / "best.pt")
    with pytest.raises(ConvertError, match="not a FreeBind projector"):
        convert(wrong, "internvl_ib", tmp_path / "x.safetensors")
    with pytest.raises(ConvertError, match=r"mlps.0.weight has shape \(64, 512\), expected"):
        # the CLAP projectors (512-d in) are not IB→InternVL projectors (1024-d in)
        bad = tmp_path / "bad"
        (bad).mkdir()
        (bad / "InternVL_IB_Proj").symlink_to(root / "InternVL_IB_PP_G_Proj")
        convert(bad, "internvl_ib", tmp_path / "x.safetensors")
    with pytest.raises(UsageError, match="unknown variant"):
        convert(root, "imagebind+++", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_convert_writes_bundle_and_reports(release, tmp_path):
    from freebind_cli.main import app

    root, _ = release
    out = tmp_path / "cli.safetensors"
    res = CliRunner().invoke(app, ["convert", str(root), "--variant", "imagebind++", "-o",
                                   str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert out.exists() and '"verified_max_abs_diff"' in res.output
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "nope"), "--variant",
                                   "imagebind++", "-o", str(out)])
    assert res.exit_code == 2 and "no such folder" in res.output
    assert "Traceback" not in res.output
