"""The expression language: corpus, canonical form, property round-trip, errors, compiler."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freebind.algebra import Bond, Chain, SpaceRef, data_modes, format, parse, plan
from freebind.algebra.keywords import OPTIONS
from freebind.util.errors import ExpressionError

CORPUS = {
    "IB": "IB",
    "IB+d(InternVL)": "IB + d(InternVL)",
    "IB + d(InternVL) + c(CLAP_g, a=0.5)": "IB + d(InternVL) + c(CLAP_g, a=0.5)",
    "IB + d(InternVL) + c(CLAP_g, CLAP_m, a=0.8, t=0.5)":
        "IB + d(InternVL) + c(CLAP_g, CLAP_m, a=0.8, t=0.5)",
    "(IB + d(InternVL)) + c(CLAP)": "IB + d(InternVL) + c(CLAP)",
    "((IB))": "IB",
    "IB + c((IB + d(InternVL)))": "IB + c((IB + d(InternVL)))",
    "IB + c(IB + d(InternVL))": "IB + c((IB + d(InternVL)))",
    "IB + c(CLAP, text=0.1, audio=0.5)": "IB + c(CLAP, a=0.5, t=0.1)",
    "IB + d(InternVL, i=0.8)": "IB + d(InternVL, v=0.8)",
    "IB + c(CLAP_g, CLAP_m, w=(0.6, 0.4), hidden=512)":
        "IB + c(CLAP_g, CLAP_m, hidden=512, w=(0.6, 0.4))",
    "IB + c(open_clip:ViT-B-32/laion2b_s34b_b79k)":
        "IB + c(open_clip:ViT-B-32/laion2b_s34b_b79k)",
    "mini:bind + d(mini:vl) + c(mini:clap, a=.8, lr=1e-3)":
        "mini:bind + d(mini:vl) + c(mini:clap, a=0.8, lr=0.001)",
}


@pytest.mark.parametrize("text,canonical", CORPUS.items())
def test_corpus_canonical_and_round_trip(text, canonical):
    ast = parse(text, known=None)
    assert format(ast) == canonical
    assert parse(format(ast), known=None) == ast


def test_ast_shape():
    ast = parse("IB + d(InternVL) + c(CLAP_g, CLAP_m, a=0.8, t=0.5)", known=None)
    assert isinstance(ast, Chain) and ast.base == SpaceRef("IB")
    d, c = ast.bonds
    assert d == Bond("d", (SpaceRef("InternVL"),))
    assert c.kind == "c" and c.experts == (SpaceRef("CLAP_g"), SpaceRef("CLAP_m"))
    assert c.factor_dict() == {"audio": 0.8, "text": 0.5}


def test_quoted_names_round_trip():
    ast = parse('IB + c("clap:/ckpts/my model (v2).pt")', known=None)
    assert ast.bonds[0].experts[0].name == "clap:/ckpts/my model (v2).pt"
    assert parse(format(ast), known=None) == ast


# --- property test over generated ASTs ---------------------------------------------------
names = st.one_of(
    st.sampled_from(["IB", "CLAP", "CLAP_g", "mini:bind", "open_clip:ViT-B-32/laion2b_s34b",
                     "c", "d", "x.y-z"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
            max_size=12),
)
factor = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
option_values = {
    "hidden": st.integers(1, 4096), "epochs": st.integers(1, 100), "seed": st.integers(0, 99),
    "lr": st.floats(1e-6, 1.0), "temp": st.floats(1e-3, 1.0), "topk": st.integers(1, 50),
}


@st.composite
def bonds(draw, depth):
    kind = draw(st.sampled_from(["c", "d"]))
    n = 1 if kind == "d" else draw(st.integers(1, 3))
    experts = tuple(draw(exprs(depth - 1)) for _ in range(n))
    mods = draw(st.lists(st.sampled_from(["audio", "image", "text", "depth"]), unique=True,
                         max_size=3))
    order = ("audio", "image", "text", "video", "depth", "thermal", "imu")
    factors = tuple((m, draw(factor)) for m in order if m in mods)
    keys = draw(st.lists(st.sampled_from(sorted(option_values)), unique=True, max_size=2))
    options = {k: draw(option_values[k]) for k in keys}
    if kind == "c" and n > 1 and draw(st.booleans()):
        options["w"] = tuple(draw(st.floats(0.1, 5.0)) for _ in range(n))
    return Bond(kind, experts, factors, tuple(sorted(options.items())))


@st.composite
def exprs(draw, depth=2):
    base = SpaceRef(draw(names))
    if depth <= 0 or draw(st.booleans()):
        return base
    return Chain(base, tuple(draw(bonds(depth)) for _ in range(draw(st.integers(1, 3)))))


@settings(max_examples=300, deadline=None)
@given(exprs())
def test_property_parse_format_round_trip(ast):
    assert parse(format(ast), known=None) == ast


# --- errors: exit-2 kind, caret at the exact column ----------------------------------------
ERRORS = [
    ("", 0, "empty expression"),
    ("   ", 3, "empty expression"),
    ("IB + c(CLAP", 11, "missing ')'"),
    ("(IB + c(CLAP)", 13, "missing ')'"),
    ("IB + c(CLAP))", 12, "unmatched ')'"),
    ("IB + c()", 7, "needs an expert"),
    ("IB + c(a=0.5)", 7, "needs an expert"),
    ("IB + d(InternVL, CLAP)", 17, "exactly one expert"),
    ("IB + c(CLAP, a=0.5, audio=0.2)", 20, "duplicate keyword"),
    ("IB + c(CLAP, a=1.5)", 15, "outside [0, 1]"),
    ("IB + c(CLAP, a=-0.1)", 15, "outside [0, 1]"),
    ("IB + c(CLAP, a=high)", 15, "expected a number"),
    ("IB + c(CLAP, hidden=1.5)", 20, "whole number"),
    ("IB + c(CLAP, alpha=0.5)", 13, "unknown keyword"),
    ("IB + c(CLAPP)", 7, "unknown space"),
    ("IB + c(CLAP) extra", 13, "unexpected"),
    ("IB + CLAP", 5, "expected a bond"),
    ("d(IB)", 0, "base space"),
    ("IB + c(CLAP, a=0.5, CLAP_m)", 20, "before keyword"),
    ("IB + c(CLAP_g, CLAP_m, w=(1.0))", 23, "weight(s) for 2"),
    ("IB + c(CLAP) $", 13, "unexpected character"),
    ("IB + c(CLAP, v=0.5)", 13, "does not apply"),
]


@pytest.mark.parametrize("text,column,fragment", ERRORS)
def test_errors_point_at_the_column(text, column, fragment):
    with pytest.raises(ExpressionError) as info:
        plan(text)
    err = info.value
    assert fragment in err.message
    assert err.start == column, err.render()
    assert err.exit_code == 2
    rendered = err.render().splitlines()
    assert rendered[1] == "  " + text
    assert rendered[2].index("^") == column + 2


def test_unknown_keyword_lists_valid_ones():
    with pytest.raises(ExpressionError) as info:
        plan("IB + c(CLAP, alpha=0.5)")
    assert "valid keywords: a, audio" in info.value.hint and "hidden" in info.value.hint


def test_unknown_space_suggests_closest():
    with pytest.raises(ExpressionError) as info:
        plan("IB + c(CLAP_q)")
    assert "CLAP_g" in info.value.hint


def test_no_shared_modality_names_both_sets():
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

    spaces.register(SpaceInfo("test:depthonly", "test", ("depth",), 8), replace=True)
    with pytest.raises(ExpressionError) as info:
        plan("mini:clap + c(test:depthonly)")
    msg = info.value.message
    assert "shares no modality" in msg and "{depth}" in msg and "{audio, text}" in msg
    assert info.value.start == len("mini:clap + c(")


# --- compiler --------------------------------------------------------------------------------
def test_paper_expression_two_bonds_three_jobs():
    p = plan("IB + d(InternVL) + c(CLAP_g, CLAP_m, a=0.8, t=0.5)")
    assert [b["id"] for b in p.bonds()] == ["b1", "b2"]
    assert [(j.id, j.kind, j.source, j.target) for j in p.jobs] == [
        ("j1", "d", "IB", "InternVL"),
        ("j2", "c", "CLAP_g", "IB + d(InternVL)"),
        ("j3", "c", "CLAP_m", "IB + d(InternVL)"),
    ]
    assert [j.depends_on for j in p.jobs] == [[], ["j1"], ["j1"]]
    assert [(j.source_dim, j.target_dim) for j in p.jobs] == [(1024, 768), (512, 768),
                                                              (512, 768)]
    assert p.jobs[0].data_modes == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    assert p.jobs[0].hyper["hidden"] == 2048
    assert p.dim == 768
    b2 = p.bonds()[1]
    assert b2["factors"] == {"audio": 0.8, "text": 0.5} and b2["weights"] == [0.5, 0.5]


def test_nested_expert_jobs_come_first():
    p = plan("mini:bind + c((mini:bind + d(mini:vl)))")
    # textual order: b1 is the outer c, b2 the inner d; the inner job trains first
    assert [(j.id, j.bond) for j in p.jobs] == [("j1", "b2"), ("j2", "b1")]
    assert p.jobs[1].depends_on == ["j1"]
    assert p.jobs[1].source == "mini:bind + d(mini:vl)"
    assert p.jobs[0].hyper["hidden"] == 256  # mini spaces train small projectors


def test_data_modes():
    assert data_modes(("audio", "image", "text")) == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    assert data_modes(("image", "text")) == ["mix", "T", "V"]
    assert data_modes(("text",)) == ["T"]


def test_default_factors_and_weights():
    p = plan("IB + c(CLAP_g, CLAP_m, w=(3, 1)) + d(InternVL)")
    b1, b2 = p.bonds()
    assert b1["factors"] == {"audio": 0.5, "text": 0.5}
    assert b1["weights"] == [0.75, 0.25]
    assert b2["factors"] == {"image": 0.8, "text": 0.8}


def test_options_are_validated():
    assert set(OPTIONS) >= {"hidden", "temp", "epochs", "lr", "batch", "topk", "tau", "seed"}
    p = plan("mini:bind + c(mini:clap, hidden=64, epochs=3)")
    assert p.jobs[0].hyper["hidden"] == 64 and p.jobs[0].hyper["epochs"] == 3


def test_the_same_expert_twice_in_a_bond_is_an_error_with_a_caret():
    import freebind
    from freebind.util.errors import ExpressionError

    for expr, col in (("IB + c(CLAP, CLAP)", 13), ("IB + c(CLAP_g, CLAP)", 15)):
        with pytest.raises(ExpressionError) as err:
            freebind.plan(expr)
        assert "twice in one bond" in err.value.message
        assert err.value.start == col, err.value.render()
        assert err.value.render().splitlines()[2] == "  " + " " * col + "^^^^"
    freebind.plan("mini:bind + c(mini:clap, mini:clap2)")     # different spaces: fine
