"""Every CUDA branch, against the CPU: a build with ``device="cuda"`` (fp32, tf32 and bf16
similarities, bf16 autocast), training, the router, embed, index and search with a CUDA
bundle, and fusion of CUDA tensors. Skipped without CUDA; ``benchmarks/device.sh`` runs them
first on a lent GPU machine (``pytest -m gpu``)."""

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

FAST = {"hidden": 32, "batch": 64, "epochs": 2, "patience": 2}
EXPR = "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2, route=learned)"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _build(tmp_path, name, device=None, **hyper):
    from freebind.build.orchestrator import build

    opts = {"device": device} if device else {}
    return build(EXPR, output=tmp_path / f"{name}.safetensors", cache_dir=tmp_path / "cache",
                 mini_pool_size=150, progress=False, hyper={**FAST, **hyper},
                 space_options=opts)


def _losses(fused):
    return {j: s["final_val_loss"] for j, s in fused.metadata["training"].items()}


@pytest.mark.parametrize("sim,amp", [("fp32", None), ("tf32", None), ("bf16", "bf16")])
def test_build_on_cuda_trains_like_the_cpu(tmp_path, sim, amp):
    """All three jobs and the router on the GPU: same tuples count, held-out losses within a
    few percent of the CPU build (fp32 agrees closely; reduced precision within 5 %)."""
    hyper = {"sim": sim, **({"amp": amp} if amp else {})}
    cpu = _build(tmp_path, "cpu", None, **hyper)
    gpu = _build(tmp_path, "gpu", "cuda", **hyper)
    assert [j.tuples for j in gpu.build_report.jobs] == [j.tuples for j in cpu.build_report.jobs]
    band = 0.01 if sim == "fp32" else 0.05
    for job, loss in _losses(cpu).items():
        assert _losses(gpu)[job] == pytest.approx(loss, rel=band), job
    assert gpu.routers and all(np.isfinite(v.detach().cpu().numpy()).all()
                               for v in gpu.tensors().values())


def test_training_on_cuda_equals_cpu():
    from freebind.algebra import data_modes
    from freebind.build.pseudo_tuples import build as build_tuples
    from freebind.build.projector_training import train_group

    rng = np.random.default_rng(0)

    def unit(n, d):
        x = rng.standard_normal((n, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    pools = {"B": {"audio": unit(300, 16), "text": unit(300, 16)},
             "E": {"audio": unit(300, 12), "text": unit(300, 12)}}
    tuples = build_tuples(pools, expert="E", base="B", topk=4)
    modes = data_modes(("audio", "text"))
    hyper = {"hidden": 32, "batch": 64, "epochs": 3, "patience": 3, "seed": 0,
             "temp": 0.05, "lr": 1e-3}
    a = train_group(tuples, pools["B"], pools["E"], modes, hyper)
    b = train_group(tuples, pools["B"], pools["E"], modes, hyper, device="cuda")
    x = torch.from_numpy(pools["B"]["audio"])
    torch.testing.assert_close(b.group.cpu().mixture(x), a.group.mixture(x), rtol=0,
                               atol=1e-4)


def test_router_weights_on_cuda():
    """A router's per-item σ and w computed on the GPU equal the CPU's."""
    from freebind.algebra import plan
    from freebind.fusion.router import BondRouter

    p = plan("mini:bind + c(mini:clap, mini:clap2, route=learned)")
    bond = next(b for b in p.bonds() if b.get("route") == "learned")
    router = BondRouter(bond, hidden=8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net in router.nets.values():
            net.w2.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
    m = router.modalities[0]
    d = int(bond["dim_in"])
    u = torch.nn.functional.normalize(torch.randn(5, d), dim=-1)
    proj = [torch.nn.functional.normalize(torch.randn(5, d), dim=-1)
            for _ in router.spec[m]["experts"]]
    s_cpu, w_cpu = router.weights(m, u, proj)
    router.cuda()
    s_gpu, w_gpu = router.weights(m, u.cuda(), [x.cuda() for x in proj])
    assert s_gpu.is_cuda and w_gpu.is_cuda
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=0, atol=1e-5)
    torch.testing.assert_close(w_gpu.cpu(), w_cpu, rtol=0, atol=1e-5)


def test_fuse_cuda_tensors_with_a_cpu_bundle(tmp_path):
    """CUDA inputs fuse on the GPU (the projectors are copied there; the bundle stays put)
    and equal the CPU result; a bundle moved with .to("cuda") fuses CPU arrays there."""
    from freebind import spaces
    from freebind.fusion.fused import load

    _build(tmp_path, "b")
    fused = load(tmp_path / "b.safetensors")
    texts = [f"a bell rings {i}" for i in range(12)]
    inputs = {ref: {"text": spaces.get(ref).encode("text", texts)}
              for ref in ("mini:bind", "mini:vl", "mini:clap", "mini:clap2")}
    inputs = {r: {m: torch.as_tensor(np.asarray(v)) for m, v in mods.items()}
              for r, mods in inputs.items()}
    cpu = fused.fuse(inputs)["text"]
    on_gpu = fused.fuse({r: {m: v.cuda() for m, v in mods.items()}
                         for r, mods in inputs.items()})["text"]
    assert on_gpu.is_cuda
    assert next(fused.projectors["j1"].parameters()).device.type == "cpu"
    torch.testing.assert_close(on_gpu.cpu(), cpu, rtol=0, atol=1e-5)
    moved = load(tmp_path / "b.safetensors").to("cuda")
    torch.testing.assert_close(moved.fuse(inputs, chunk_rows=5)["text"].cpu(), cpu, rtol=0,
                               atol=1e-5)


def test_embed_index_and_search_with_a_cuda_bundle(tmp_path):
    from freebind.run.partitions import embed
    from freebind.search.index import Index

    _build(tmp_path, "b")
    bundle = str(tmp_path / "b.safetensors")
    texts = tmp_path / "t.txt"
    texts.write_text("".join(f"a dog barks {i}\n" for i in range(20)))
    embed(bundle, texts=texts, output=tmp_path / "cpu", cache_dir=tmp_path / "cache",
          progress=False)
    embed(bundle, texts=texts, output=tmp_path / "gpu", cache_dir=tmp_path / "cache",
          progress=False, device="cuda")
    a = np.load(tmp_path / "cpu" / "text_emb" / "text_emb_0.npy")
    b = np.load(tmp_path / "gpu" / "text_emb" / "text_emb_0.npy")
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    hits = {}
    for dev in (None, "cuda"):
        index = Index(bundle, space_options={"device": dev} if dev else None,
                      store=tmp_path / "cache")
        index.add_embeddings(tmp_path / "cpu", store=tmp_path / "cache")
        hits[dev] = [h.path for h in index.search("a dog barks 3", modality="text", k=5)]
    assert hits["cuda"] == hits[None]
