"""Projector-group training: learns a planted map, batched = separate, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freebind.build import pseudo_tuples as pseudo
from freebind.algebra import data_modes
from freebind.build.projector_training import TrainingError, defaults_for, train_group


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def linear_world(n=300, d_src=12, d_tgt=10, seed=0):
    """Source (audio, text) and target (audio, image, text) spaces related by a fixed linear
    map on shared latents: a good projector maps source rows onto their target rows."""
    rng = np.random.default_rng(seed)
    latent = {m: rng.normal(size=(n, 8)) for m in ("audio", "image", "text")}
    a_src, a_tgt = rng.normal(size=(8, d_src)), rng.normal(size=(8, d_tgt))
    src = {m: unit(latent[m] @ a_src) for m in ("audio", "text")}
    tgt = {m: unit(latent[m] @ a_tgt) for m in ("audio", "image", "text")}
    return src, tgt


def r_at_1(pred, truth):
    sims = pred @ truth.T
    return float((sims.argmax(1) == np.arange(len(pred))).mean())


HYPER = {"hidden": 64, "batch": 64, "epochs": 8, "lr": 3e-3, "temp": 0.1, "seed": 0,
         "patience": 3, "threads": 1}


def test_training_learns_the_planted_map():
    src, tgt = linear_world()
    t = pseudo.build({"E": src, "B": tgt}, expert="E", base="B", topk=4)
    modes = data_modes(t.modalities)
    assert modes == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    res = train_group(t, src, tgt, modes, HYPER)
    assert res.group.k == 7 and not res.group.training
    assert res.pairs == [(a, b) for a in ("audio", "text") for b in ("audio", "image", "text")]
    assert res.tuples == 900 and res.train_tuples + res.val_tuples == 900
    assert 1 <= res.epochs <= 8 and len(res.history) == res.epochs
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    with torch.no_grad():
        proj = res.group.project(torch.from_numpy(src["audio"])).numpy()
    # random chance is 1/300; the projected audio finds its own target row
    assert r_at_1(proj, tgt["audio"]) > 0.5
    assert np.allclose(np.linalg.norm(proj, axis=1), 1.0, atol=1e-5)


def test_same_seed_bitwise_identical_other_seed_differs():
    src, tgt = linear_world(n=120)
    t = pseudo.build({"E": src, "B": tgt}, expert="E", base="B", topk=3)
    modes = ["mix", "A", "T"]
    h = {**HYPER, "epochs": 3}
    a = train_group(t, src, tgt, modes, h).group.tensors("j1")
    b = train_group(t, src, tgt, modes, h).group.tensors("j1")
    c = train_group(t, src, tgt, modes, {**h, "seed": 1}).group.tensors("j1")
    assert all(a[n].numpy().tobytes() == b[n].numpy().tobytes() for n in a)
    assert any(a[n].numpy().tobytes() != c[n].numpy().tobytes() for n in a)


def test_each_projector_sees_only_its_data_mode():
    """Mode 'A' trains on audio-query tuples only: when the text-query tuples pair each text
    with a random audio, the A projector still learns the map and the T projector cannot."""
    src, tgt = linear_world(n=200, seed=3)
    t = pseudo.build({"E": src, "B": tgt}, expert="E", base="B", topk=1)
    rng = np.random.default_rng(9)
    f = t.fills[("text", "audio")]
    f.index[:] = rng.integers(0, 200, size=f.index.shape)
    res = train_group(t, {"audio": src["audio"]}, {"text": tgt["text"]}, ["A", "T"],
                      {**HYPER, "epochs": 10})
    with torch.no_grad():
        y = res.group(torch.from_numpy(src["audio"])).numpy()
    good, bad = r_at_1(y[0], tgt["audio"]), r_at_1(y[1], tgt["audio"])
    assert good > 0.15 and bad < 0.05, (good, bad)  # chance: 0.005


def test_early_stopping_keeps_the_best_epoch_per_projector():
    src, tgt = linear_world(n=150, seed=5)
    t = pseudo.build({"E": src, "B": tgt}, expert="E", base="B", topk=2)
    res = train_group(t, src, tgt, ["mix", "A"], {**HYPER, "epochs": 40, "patience": 2,
                                                   "lr": 2e-2})
    assert res.epochs < 40  # stopped early
    assert all(1 <= e <= res.epochs for e in res.best_epoch)
    assert res.epochs - max(res.best_epoch) == 2


def test_lazy_gathering_equals_materialised(monkeypatch):
    import freebind.build.projector_training as tr

    src, tgt = linear_world(n=80, seed=2)
    t = pseudo.build({"E": src, "B": tgt}, expert="E", base="B", topk=3)
    h = {**HYPER, "epochs": 2}
    a = train_group(t, src, tgt, ["mix", "A", "T"], h).group.tensors("x")
    monkeypatch.setattr(tr, "MATERIALISE_BYTES", 0)
    b = train_group(t, src, tgt, ["mix", "A", "T"], h).group.tensors("x")
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-6)


def test_errors_and_defaults():
    src, tgt = linear_world(n=20)
    t = pseudo.build({"E": src, "B": tgt}, expert="E", base="B", topk=2)
    with pytest.raises(TrainingError, match="no modality pair"):
        train_group(t, {"depth": src["audio"]}, tgt, ["mix"], HYPER)
    with pytest.raises(TrainingError, match="at least one data mode"):
        train_group(t, src, tgt, [], HYPER)
    assert defaults_for(["mini", "mini"])["hidden"] < defaults_for(["mini", "clap"])["hidden"]
    assert defaults_for(["imagebind"])["hidden"] == 2048


def test_fused_training_step_equals_the_reference_composition():
    """The training forward (BatchNorm statistics in one pass, closed-form backward, the
    first layers' biases cancelled by the normalisation) gives the output, the gradients
    and the running statistics of the plain composition of linear, BatchNorm, ReLU, linear,
    BatchNorm and normalisation (autograd through every op)."""
    import torch
    from torch.nn import functional as F

    from freebind.fusion.projector import ProjectorGroup, _batch_norm

    g = torch.Generator().manual_seed(0)
    group = ProjectorGroup(3, 12, 10, hidden=16, generator=g).double()
    with torch.no_grad():
        for bn in (group.bn1, group.bn2):
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.uniform_(-0.5, 0.5, generator=g)
    ref = ProjectorGroup(3, 12, 10, hidden=16).double()
    ref.load_state_dict(group.state_dict())
    x = torch.randn(3, 40, 12, generator=g, dtype=torch.float64)
    w = torch.randn(3, 40, 10, generator=g, dtype=torch.float64)

    def reference(m, x):
        h = torch.bmm(x, m.w1) + m.b1[:, None, :]
        h = F.relu(_batch_norm(h, m.bn1.running_mean, m.bn1.running_var, m.bn1.weight,
                               m.bn1.bias, True, m.momentum))
        y = torch.bmm(h, m.w2) + m.b2[:, None, :]
        y = _batch_norm(y, m.bn2.running_mean, m.bn2.running_var, m.bn2.weight, m.bn2.bias,
                        True, m.momentum)
        return F.normalize(y, dim=-1)

    group.train()
    out = group(x)
    (out * w).sum().backward()
    expect = reference(ref, x)
    (expect * w).sum().backward()
    torch.testing.assert_close(out, expect, rtol=1e-10, atol=1e-12)
    for name in ("w1", "w2", "bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"):
        torch.testing.assert_close(group._get(name).grad, ref._get(name).grad,
                                   rtol=1e-9, atol=1e-12)
    for name in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean",
                 "bn2.running_var"):
        torch.testing.assert_close(group._get(name), ref._get(name), rtol=1e-12, atol=1e-14)
    # the biases before a batch normalisation: no gradient (the reference's is rounding)
    assert group.b1.grad is None and group.b2.grad is None
    assert ref.b1.grad.abs().max() < 1e-12 and ref.b2.grad.abs().max() < 1e-12
    # evaluation mode is the plain composition with the running statistics
    group.eval()
    ref.eval()
    torch.testing.assert_close(group(x), ref(x), rtol=1e-12, atol=1e-14)
