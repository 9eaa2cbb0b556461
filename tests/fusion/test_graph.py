"""The inference graph against values computed by hand, for every row of the bond table
(docs/architecture.md)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from freebind.algebra import plan
from freebind.util.errors import UsageError
from freebind.fusion.graph import fuse, inputs_needed, output_modalities
from freebind.fusion.projector import ProjectorGroup

from stand_ins import Linear  # noqa: E402

S = 1 / math.sqrt(2)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


SWAP = [[0.0, 1.0], [1.0, 0.0]]
IDENT = [[1.0, 0.0], [0.0, 1.0]]


def register_toys():
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

    for name, mods in (("toy:base", ("audio", "image")), ("toy:ex", ("audio", "text")),
                       ("toy:ex2", ("audio", "text"))):
        spaces.register(SpaceInfo(name, "toy", mods, 2), replace=True)


register_toys()
U = {"audio": t([1.0, 0.0]), "image": t([0.6, 0.8])}
E = {"audio": t([0.0, 1.0]), "text": t([S, S])}


def close(a, b):
    assert torch.allclose(a, torch.as_tensor(np.asarray(b, dtype=np.float32)), atol=1e-6), (a, b)


def test_combination_rows():
    p = plan("toy:base + c(toy:ex, a=0.25)")
    proj = {"j1": Linear(IDENT)}
    out = fuse(p.graph, proj, {"toy:base": U, "toy:ex": E})
    # in both: n(0.75*[1,0] + 0.25*[0,1]) = [0.75, 0.25] / sqrt(0.625)
    close(out["audio"], [[0.75 / math.sqrt(0.625), 0.25 / math.sqrt(0.625)]])
    # only base: u unchanged
    close(out["image"], [[0.6, 0.8]])
    # only expert: P(e) = n([S, S] @ I)
    close(out["text"], [[S, S]])


def test_combination_projection_is_applied_and_normalised():
    p = plan("toy:base + c(toy:ex, a=0.5)")
    proj = {"j1": Linear([[2.0, 0.0], [0.0, 0.0]])}  # P(e) = n([2*e0, 0])
    e = {"audio": t([0.6, 0.8]), "text": t([0.0, 1.0])}
    out = fuse(p.graph, proj, {"toy:base": {"audio": t([0.0, 1.0])}, "toy:ex": e},
               modalities=["audio"])
    # P(e_audio) = n([1.2, 0]) = [1, 0]; n(0.5*[0,1] + 0.5*[1,0]) = [S, S]
    close(out["audio"], [[S, S]])


def test_displacement_rows():
    p = plan("toy:ex + d(toy:base, a=0.8)")
    proj = {"j1": Linear(SWAP)}  # P(u) = n(swap(u))
    base = {"audio": t([1.0, 0.0]), "text": t([0.6, 0.8])}
    expert = {"audio": t([S, S]), "image": t([0.0, 1.0])}
    out = fuse(p.graph, proj, {"toy:ex": base, "toy:base": expert})
    # in both: n(0.8*[S,S] + 0.2*swap([1,0])=[0,1]) = n([0.8S, 0.8S+0.2])
    a = np.array([0.8 * S, 0.8 * S + 0.2])
    close(out["audio"], [a / np.linalg.norm(a)])
    # only base: P(u) = swap([0.6, 0.8]) = [0.8, 0.6]
    close(out["text"], [[0.8, 0.6]])
    # only expert: e unchanged
    close(out["image"], [[0.0, 1.0]])


def test_parallel_average_before_normalising():
    p = plan("toy:base + c(toy:ex, toy:ex2, a=1.0)")
    proj = {"j1": Linear(IDENT), "j2": Linear(SWAP)}
    e1 = {"audio": t([1.0, 0.0])}
    e2 = {"audio": t([1.0, 0.0])}  # swapped -> [0, 1]
    out = fuse(p.graph, proj, {"toy:base": {"audio": t([0.6, 0.8])}, "toy:ex": e1,
                               "toy:ex2": e2}, modalities=["audio"])
    # σ=1: n(0.5*[1,0] + 0.5*[0,1]) = [S, S]
    close(out["audio"], [[S, S]])
    p = plan("toy:base + c(toy:ex, toy:ex2, a=1.0, w=(3, 1))")
    out = fuse(p.graph, proj, {"toy:base": {"audio": t([0.6, 0.8])}, "toy:ex": e1,
                               "toy:ex2": e2}, modalities=["audio"])
    close(out["audio"], [[0.75 / math.sqrt(0.625), 0.25 / math.sqrt(0.625)]])


def test_sequential_chaining():
    p = plan("toy:base + c(toy:ex, a=0.5) + c(toy:ex2, a=0.5)")
    proj = {"j1": Linear(IDENT), "j2": Linear(SWAP)}
    emb = {"toy:base": {"audio": t([1.0, 0.0])}, "toy:ex": {"audio": t([0.0, 1.0])},
           "toy:ex2": {"audio": t([1.0, 0.0])}}
    out = fuse(p.graph, proj, emb, modalities=["audio"])
    # after b1: [S, S]; b2 expert: swap([1,0]) = [0,1]; n(0.5*[S,S] + 0.5*[0,1])
    a = np.array([0.5 * S, 0.5 * S + 0.5])
    close(out["audio"], [a / np.linalg.norm(a)])


def test_factor_overrides_global_bond_expert_and_off():
    p = plan("toy:base + c(toy:ex, a=0.25)")
    proj = {"j1": Linear(IDENT)}
    emb = {"toy:base": U, "toy:ex": E}
    close(fuse(p.graph, proj, emb, factors=["a=0"])["audio"], [[1.0, 0.0]])
    close(fuse(p.graph, proj, emb, factors=["b1.a=1"])["audio"], [[0.0, 1.0]])
    close(fuse(p.graph, proj, emb, factors=["a=0", "toy:ex.a=1"])["audio"], [[0.0, 1.0]])
    off = fuse(p.graph, proj, emb, factors=["b1=off"])
    assert set(off) == {"audio", "image"}  # the expert's own text modality is gone
    close(off["audio"], [[1.0, 0.0]])
    presets = {"strong": ["a=0.5"]}
    close(fuse(p.graph, proj, emb, presets=presets, preset="strong")["audio"], [[S, S]])
    with pytest.raises(UsageError, match="unknown preset"):
        fuse(p.graph, proj, emb, presets=presets, preset="nope")
    with pytest.raises(UsageError, match="no bond or expert"):
        fuse(p.graph, proj, emb, factors=["b7.a=0.1"])


def test_inputs_needed_skips_unused_spaces():
    p = plan("toy:base + c(toy:ex, a=0.25)")
    assert inputs_needed(p.graph, "audio") == {"toy:base": {"audio"}, "toy:ex": {"audio"}}
    assert inputs_needed(p.graph, "image") == {"toy:base": {"image"}}
    assert inputs_needed(p.graph, "text") == {"toy:ex": {"text"}}
    from freebind.fusion.factors import resolve

    assert inputs_needed(p.graph, "audio", resolve(p.graph, ["a=0"])) == \
        {"toy:base": {"audio"}}
    assert output_modalities(p.graph, resolve(p.graph, ["b1=off"])) == ["audio", "image"]


def test_missing_input_is_a_clear_error():
    p = plan("toy:base + c(toy:ex, a=0.25)")
    with pytest.raises(UsageError, match="needs embeddings of: toy:ex audio"):
        fuse(p.graph, {"j1": Linear(IDENT)}, {"toy:base": U}, modalities=["audio"])


def test_projector_group_matches_reference_modules():
    torch.manual_seed(0)
    k, d_in, h, d_out = 3, 5, 7, 4
    group = ProjectorGroup(k, d_in, d_out, h, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # non-trivial batch-norm statistics
        for bn in (group.bn1, group.bn2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    group.eval()
    x = torch.randn(6, d_in)
    outs = []
    for i in range(k):
        ref = nn.Sequential(nn.Linear(d_in, h), nn.BatchNorm1d(h), nn.ReLU(),
                            nn.Linear(h, d_out), nn.BatchNorm1d(d_out)).eval()
        with torch.no_grad():
            ref[0].weight.copy_(group.w1[i].T)
            ref[0].bias.copy_(group.b1[i])
            ref[3].weight.copy_(group.w2[i].T)
            ref[3].bias.copy_(group.b2[i])
            for j, bn in ((1, group.bn1), (4, group.bn2)):
                for stat in ("weight", "bias", "running_mean", "running_var"):
                    getattr(ref[j], stat).copy_(getattr(bn, stat)[i])
            outs.append(nn.functional.normalize(ref(x), dim=-1))
    expect_mix = torch.stack(outs).mean(0)
    assert torch.allclose(group.mixture(x), expect_mix, atol=1e-5)
    assert torch.allclose(group.project(x), nn.functional.normalize(expect_mix, dim=-1),
                          atol=1e-5)


def test_projector_group_training_mode_matches_batchnorm():
    group = ProjectorGroup(2, 3, 2, 4, generator=torch.Generator().manual_seed(0)).train()
    x = torch.randn(8, 3)
    ref = nn.BatchNorm1d(4)
    h = torch.einsum("ni,kih->knh", x, group.w1) + group.b1[:, None, :]
    ref(h[0].detach())  # updates the reference's running statistics
    group(x)
    assert torch.allclose(group.bn1.running_mean[0], ref.running_mean, atol=1e-6)
    assert torch.allclose(group.bn1.running_var[0], ref.running_var, atol=1e-6)


def test_numpy_inputs_accepted():
    p = plan("toy:base + c(toy:ex, a=0.25)")
    out = fuse(p.graph, {"j1": Linear(IDENT)},
               {"toy:base": {"audio": np.array([[1.0, 0.0]])},
                "toy:ex": {"audio": np.array([[0.0, 1.0]])}})
    assert set(out) == {"audio"}


def test_remembered_projections_equal_and_reuse_and_stay_bounded():
    """fusion.memo: the same rows project once (by content), results equal the group's,
    other rows or shapes are projected anew, and the cache keeps at most ``entries``."""
    import torch

    from freebind.fusion.memo import remembered

    class Counting:
        calls = 0

        def mixture(self, x):
            Counting.calls += 1
            return x * 2.0

    memo = remembered({"j1": Counting(), "router.b1": "router"}, entries=2)
    assert memo["router.b1"] == "router"                    # routers pass through
    x = torch.arange(6.0).reshape(3, 2)
    first = memo["j1"].mixture(x)
    again = memo["j1"].mixture(x.clone())                   # same content: remembered
    assert torch.equal(first, x * 2) and again is first and Counting.calls == 1
    memo["j1"].mixture(x + 1)
    memo["j1"].mixture(x + 2)                               # evicts x (two entries kept)
    assert Counting.calls == 3 and len(memo["j1"].cache) == 2
    memo["j1"].mixture(x)
    assert Counting.calls == 4
    small = remembered({"j1": Counting()}, entries=8, max_rows=2, clone=True)["j1"]
    small.mixture(x)
    small.mixture(x)                                        # 3 rows > max_rows: never kept
    assert Counting.calls == 6 and not small.cache
    y = torch.ones(2, 2)
    assert small.mixture(y) is not small.mixture(y)         # clones handed out
    assert Counting.calls == 7
