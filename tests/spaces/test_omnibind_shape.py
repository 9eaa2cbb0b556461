"""The OmniBind-shaped expression of ``benchmarks/bench_omnibind.py`` plans at the real
spaces' dims: one parallel combination of four experts under a learned router, a job per
expert, and the result in the base's coordinates with the experts' audio."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_omnibind_expression_plans_at_real_dims():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_omnibind as omni
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import freebind

    omni.register()
    plan = freebind.plan(omni.EXPRESSION.format(route=", route=learned"))
    assert plan.graph["dim"] == 1536
    assert set(plan.graph["modalities"]) == {"audio", "image", "text"}
    assert {r: s["dim"] for r, s in plan.spaces.items()} == {
        "omni:EVA-CLIP": 1536, "omni:CLAP": 512, "omni:MS-CLAP": 1024, "omni:IB": 1024,
        "omni:SigLIP2": 1152}
    assert len(plan.jobs) == 4
    from freebind.fusion.factors import bond_nodes

    (bond,) = bond_nodes(plan.graph)
    assert (bond["kind"], bond.get("route"), len(bond["experts"])) == ("c", "learned", 4)
