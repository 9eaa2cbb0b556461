"""Export a bundle's fusion graph to ONNX (``freebind export BUNDLE --format onnx``).

The exported graph is the fusion only — input normalisation, projector groups (stacked
Linear–BatchNorm–ReLU–Linear–BatchNorm, per-projector normalisation, mean), parallel
experts' weighted sum, combination and displacement mixing, learned routers, output
normalisation — the same computation as :meth:`freebind.fusion.fused.FusedSpace.fuse` (the bond
table in :mod:`freebind.fusion.graph`). The encoders are not exported: the base embeddings are the
graph's inputs, one per base space and modality, named ``SPACE/MODALITY`` (``mini:bind/audio``,
``[N_audio, dim]`` float32: every modality has its own batch size, and a modality not wanted
can be fed zero rows). The factors are inputs too, named ``BOND.MODALITY`` (``b2.audio``, a
float32 scalar), so they stay adjustable after export; their values in the bundle (or in
the exported preset) are in the model's metadata, ``freebind.factor_defaults`` (JSON), which
:func:`default_feeds` reads. Outputs are named by modality (``audio``, ``text``, …),
``[N_audio, dim]`` float32, unit rows.

What is fixed at export time: which bonds are on (``bN=off``), whether a routed bond uses its
router (``route=off``) and the parallel experts' weights. A factor of 0 or 1 is a value like
any other here (``fuse`` skips the unused inputs then; the graph still takes them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from freebind.util.errors import UsageError

OPSET = 17
IR_VERSION = 8
EPS = 1e-12            # F.normalize's eps
FORMATS = ("onnx",)
#: largest difference to FusedSpace.fuse an export may show when verified
TOLERANCE = 1e-5
#: weights larger than this go to an external data file beside the model
EXTERNAL_AT = 1 << 30


@dataclass
class ExportReport:
    output: str
    format: str
    inputs: dict[str, list]                 # name -> shape (N for the batch)
    factors: dict[str, float]               # name -> default
    outputs: dict[str, list]
    max_abs_diff: dict[str, float] | None = None   # onnxruntime vs FusedSpace.fuse
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _onnx():
    from freebind.util.optional import require

    return require("onnx", "the ONNX export", install="'freebind[onnx]'")


class _Builder:
    """An ONNX graph under construction, with unique names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.h = onnx.helper
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.factor_defaults: dict[str, float] = {}
        self.input_shapes: dict[str, list] = {}
        self._n = 0
        self._consts: dict = {}
        self._weights: dict[str, str] = {}

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, kind: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or kind.lower())
        self.nodes.append(self.h.make_node(kind, inputs, [out], **attrs))
        return out

    def tensor(self, value, hint: str) -> str:
        arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
        name = self.name(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def weight(self, name: str, make) -> str:
        """A named initializer made once (``make()`` → array), shared by every node using it:
        a projector group applied to several modalities stores its weights once."""
        if name not in self._weights:
            arr = np.ascontiguousarray(np.asarray(make(), dtype=np.float32))
            self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
            self._weights[name] = name
        return name

    def scalar(self, value: float) -> str:
        key = float(np.float32(value))
        if key not in self._consts:
            self._consts[key] = self.tensor(np.float32(key), "c")
        return self._consts[key]

    def graph_input(self, name: str, dim: int, modality: str) -> None:
        if name not in self.input_shapes:
            self.input_shapes[name] = [f"N_{modality}", int(dim)]
            self.inputs.append(self.h.make_tensor_value_info(
                name, self.onnx.TensorProto.FLOAT, self.input_shapes[name]))

    def factor(self, name: str, default: float) -> str:
        if name not in self.factor_defaults:
            self.factor_defaults[name] = float(default)
            self.inputs.append(self.h.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT,
                                                             []))
        return name

    def normalize(self, x: str) -> str:
        """x / max(‖x‖₂, eps) over the last axis (F.normalize)."""
        norm = self.op("ReduceL2", [x], "norm", axes=[-1], keepdims=1)
        return self.op("Div", [x, self.op("Max", [norm, self.scalar(EPS)])], "unit")

    def axpy(self, a: str, x: str, b: str, y: str) -> str:
        """a·x + b·y."""
        return self.op("Add", [self.op("Mul", [a, x]), self.op("Mul", [b, y])], "mix")


def _mixture(b: _Builder, group, job_id: str, x: str) -> str:
    """m(x) = mean_k n(P_k(x)) of a ProjectorGroup in eval mode, as torch computes it."""
    import torch

    def t(name):
        return group._get(name).detach().cpu().float()

    def w(name, make):
        return b.weight(f"{job_id}.{name}", make)

    def bn(h, prefix):
        h = b.op("Sub", [h, w(f"{prefix}.running_mean",
                              lambda: t(f"{prefix}.running_mean")[:, None, :])])
        h = b.op("Mul", [h, w(f"{prefix}.inv_std", lambda: torch.rsqrt(      # projector.BN_EPS
            t(f"{prefix}.running_var") + 1e-5)[:, None, :])])
        h = b.op("Mul", [h, w(f"{prefix}.weight", lambda: t(f"{prefix}.weight")[:, None, :])])
        return b.op("Add", [h, w(f"{prefix}.bias", lambda: t(f"{prefix}.bias")[:, None, :])])

    h = b.op("MatMul", [x, w("w1", lambda: t("w1"))])                     # [K, N, H]
    h = b.op("Add", [h, w("b1", lambda: t("b1")[:, None, :])])
    h = b.op("Relu", [bn(h, "bn1")])
    y = b.op("MatMul", [h, w("w2", lambda: t("w2"))])                     # [K, N, out]
    y = b.op("Add", [y, w("b2", lambda: t("b2")[:, None, :])])
    y = b.normalize(bn(y, "bn2"))
    return b.op("ReduceMean", [y], f"{job_id}.mixture", axes=[0], keepdims=0)


def _evaluator_class():
    """The ONNX evaluator's class (made on first use: :mod:`freebind.fusion.graph` imports
    torch)."""
    from freebind.fusion.graph import _Evaluator

    class OnnxEvaluator(_Evaluator):
        """The fusion graph's evaluator (:mod:`freebind.fusion.graph`), emitting ONNX nodes: the
        same structure (switches, which side has a modality), factors as graph inputs."""

        def __init__(self, builder: _Builder, projectors, table, dims):
            super().__init__(projectors, self._fetch, table, dry=False)
            self.b = builder
            self.dims = dims
            self._inputs: dict[str, str] = {}
            self._mixtures: dict[tuple, str] = {}

        def _fetch(self, ref: str, modality: str) -> str:
            name = f"{ref}/{modality}"
            if name not in self._inputs:
                self.b.graph_input(name, self.dims[ref], modality)
                self._inputs[name] = self.b.normalize(name)    # fuse normalises its inputs
            return self._inputs[name]

        def normalize(self, x):
            return self.b.normalize(x)

        def project(self, job_id: str, x):
            key = (job_id, x)
            if key not in self._mixtures:
                group = self.projectors.get(job_id)
                if group is None:
                    raise UsageError(f"projector {job_id} is missing")
                self._mixtures[key] = _mixture(self.b, group, job_id, x)
            return self._mixtures[key]

        def expert_projection(self, bond: dict, modality: str):
            total = None
            for expert, job_id, w in zip(bond["experts"], bond["jobs"], bond["weights"]):
                if not self.has(expert, modality) or w == 0:
                    continue
                term = self.b.op("Mul", [self.b.scalar(w),
                                         self.project(job_id, self.value(expert, modality))])
                total = term if total is None else self.b.op("Add", [total, term])
            return self.b.normalize(total)

        def routed(self, bond, router, modality, u):
            spec = router.spec[modality]
            base = u()
            mixtures = []
            for i in spec["experts"]:
                if not self.has(bond["experts"][i], modality):
                    raise UsageError(f"{bond['id']}.{modality}: a routed expert lacks "
                                     f"{modality} here; export with {bond['id']}.route=off")
                mixtures.append(self.project(bond["jobs"][i],
                                             self.value(bond["experts"][i], modality)))
            return _routed_mix(self.b, router.nets[modality], spec,
                               f"router.{bond['id']}.{modality}", base, mixtures)

        def fixed_combination(self, bond, entry, modality, u):
            sigma = self.b.factor(f"{bond['id']}.{modality}", entry.factors.get(modality, 0.0))
            base, proj = u(), self.expert_projection(bond, modality)
            one_minus = self.b.op("Sub", [self.b.scalar(1.0), sigma])
            return self.b.normalize(self.b.axpy(one_minus, base, sigma, proj))

        def fixed_displacement(self, bond, entry, modality, pu):
            lam = self.b.factor(f"{bond['id']}.{modality}", entry.factors.get(modality, 0.0))
            e, p = self.value(bond["experts"][0], modality), pu()
            one_minus = self.b.op("Sub", [self.b.scalar(1.0), lam])
            return self.b.normalize(self.b.axpy(lam, e, one_minus, p))

    return OnnxEvaluator


def _routed_mix(b: _Builder, net, spec: dict, prefix: str, base: str,
                mixtures: list[str]) -> str:
    """n((1 − σ)·u + σ·n(Σ_i w_i m_i)) with a router's per-item σ and w
    (:mod:`freebind.fusion.router`), as nodes: ``net`` the router's network for the
    modality, ``spec`` its spec, ``prefix`` its weights' names."""
    from freebind.fusion.router import EPS as R_EPS

    x = b.op("Concat", [base, *[b.normalize(m) for m in mixtures]], axis=-1)

    def w(name):
        return b.weight(f"{prefix}.{name}", lambda: getattr(net, name).detach().cpu().float())

    h = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, w("w1")]), w("b1")])])
    z = b.op("Add", [b.op("MatMul", [h, w("w2")]), w("b2")], "logits")
    s0 = min(max(spec["sigma0"], R_EPS), 1.0 - R_EPS)
    z0 = b.op("Slice", [z, _i64(b, [0]), _i64(b, [1]), _i64(b, [-1])])     # [N, 1]
    sigma = b.op("Sigmoid", [b.op("Add", [b.scalar(float(np.log(s0 / (1.0 - s0)))), z0])],
                 "sigma")
    proj = b.normalize(_weighted_mixtures(b, z, spec, prefix, mixtures))
    return b.normalize(b.axpy(b.op("Sub", [b.scalar(1.0), sigma]), base, sigma, proj))


def _weighted_mixtures(b: _Builder, z: str, spec: dict, prefix: str,
                       mixtures: list[str]) -> str:
    """Σ_i w_i m_i with w = softmax(log w0 + the router's logits 1…k) (one expert: its
    mixture)."""
    k = len(spec["experts"])
    if k == 1:
        return mixtures[0]
    import torch

    prior = torch.log(torch.tensor(spec["w0"]).clamp_min(1e-12))
    zw = b.op("Slice", [z, _i64(b, [1]), _i64(b, [1 + k]), _i64(b, [-1])])
    w = b.op("Softmax", [b.op("Add", [b.tensor(prior, prefix + ".log_w0"), zw])], "w",
             axis=-1)
    total = None
    for i, m in enumerate(mixtures):
        wi = b.op("Slice", [w, _i64(b, [i]), _i64(b, [i + 1]), _i64(b, [-1])])
        term = b.op("Mul", [wi, m])
        total = term if total is None else b.op("Add", [total, term])
    return total


def _i64(b: _Builder, values) -> str:
    key = ("i64", tuple(values))
    if key not in b._consts:
        name = b.name("idx")
        b.inits.append(b.onnx.numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        b._consts[key] = name
    return b._consts[key]


def to_onnx(fused, modalities: Sequence[str] | None = None):
    """The ONNX ``ModelProto`` of ``fused``'s fusion graph under its current factors view
    (:meth:`FusedSpace.with_factors`): inputs ``SPACE/MODALITY`` and ``BOND.MODALITY``,
    outputs named by modality."""
    onnx = _onnx()
    from freebind.util.version import __version__

    mods = list(modalities) if modalities else list(fused.modalities)
    unknown = [m for m in mods if m not in fused.modalities]
    if unknown:
        raise UsageError(f"{fused.name} yields no {', '.join(unknown)} here (it yields "
                         f"{', '.join(fused.modalities)})")
    b = _Builder(onnx)
    dims = {ref: int(meta["dim"]) for ref, meta in fused.plan.spaces.items()}
    ev = _evaluator_class()(b, fused.projectors, fused.table, dims)
    for m in mods:
        out = ev.value(fused.graph, m)
        b.nodes.append(onnx.helper.make_node("Identity", [out], [m]))
        b.outputs.append(onnx.helper.make_tensor_value_info(m, onnx.TensorProto.FLOAT,
                                                            [f"N_{m}", int(fused.dim)]))
    # embeddings first (sorted), then the factors (sorted)
    emb = sorted((i for i in b.inputs if i.name in b.input_shapes), key=lambda i: i.name)
    fac = sorted((i for i in b.inputs if i.name in b.factor_defaults), key=lambda i: i.name)
    graph = onnx.helper.make_graph(b.nodes, "freebind_fusion", [*emb, *fac], b.outputs,
                                   initializer=b.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="freebind", producer_version=__version__)
    model.ir_version = IR_VERSION
    onnx.helper.set_model_props(model, {"freebind.expression": fused.name,
                                        "freebind.fusion.factors": _json(fused.factors),
                                        "freebind.factor_defaults": _json(b.factor_defaults),
                                        "freebind.preset": fused.preset or ""})
    if _weight_bytes(model) <= EXTERNAL_AT:
        onnx.checker.check_model(model)     # a larger one is checked from its file
    return model


def _weight_bytes(model) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save(model, output) -> list[Path]:
    """Write ``model`` to ``output`` atomically; weights past :data:`EXTERNAL_AT` bytes go
    to ``<output>.data`` beside it (ONNX's external data: protobuf stops at 2 GB). Returns
    the files written."""
    from freebind.util.atomic import atomic_write

    onnx = _onnx()
    output = Path(output)
    if _weight_bytes(model) <= EXTERNAL_AT:
        atomic_write(output, lambda tmp: onnx.save_model(model, tmp))
        return [output]
    data = output.with_name(output.name + ".data")
    atomic_write(output, lambda tmp: onnx.save_model(
        model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
        location=data.name, size_threshold=1024))
    onnx.checker.check_model(str(output))
    return [output, data]


def _json(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


def export(bundle, output, *, format: str = "onnx", factors=None,  # noqa: A002
           preset: str | None = None, modalities: Sequence[str] | None = None,
           verify: bool = True, rows: int = 8, seed: int = 0) -> ExportReport:
    """Export ``bundle`` (a path, ``bundle@preset``, ``hf:…`` or a FusedSpace) to
    ``output``. ``factors``/``preset`` set the factors' defaults and the switches.
    ``verify``: run the file with onnxruntime on ``rows`` random unit rows per input and
    report the largest difference to :meth:`FusedSpace.fuse` per output (when onnxruntime
    is installed)."""
    if format not in FORMATS:
        raise UsageError(f"--format {format}: the formats are {', '.join(FORMATS)}")
    fused = _as_fused(bundle, factors, preset)
    model = to_onnx(fused, modalities)
    files = save(model, output)
    g = model.graph
    report = ExportReport(
        output=str(output), format=format,
        inputs={i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                for i in g.input if i.type.tensor_type.shape.dim},
        factors=factor_defaults(model),
        outputs={o.name: [f"N_{o.name}", int(fused.dim)] for o in g.output},
        bytes=sum(f.stat().st_size for f in files), files=[str(f) for f in files])
    if verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            report.notes.append("not verified: onnxruntime is not installed")
        else:
            report.max_abs_diff = verify_onnx(output, fused, rows=rows, seed=seed)
            worst = max(report.max_abs_diff.values(), default=0.0)
            if not worst <= TOLERANCE:
                from freebind.util.errors import FreebindError

                raise FreebindError(f"{output}: onnxruntime differs from freebind's fusion by "
                                    f"{worst:.2e} (more than {TOLERANCE:g}); please report it")
    return report


def factor_defaults(model) -> dict[str, float]:
    """``{"b2.audio": 0.5, …}``: the factor inputs' values in the exported bundle (a
    ``ModelProto``, a path, or an onnxruntime session)."""
    import json

    if hasattr(model, "get_modelmeta"):                     # an onnxruntime session
        props = model.get_modelmeta().custom_metadata_map
    else:
        if not hasattr(model, "metadata_props"):
            model = _onnx().load(os.fspath(model), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props.get("freebind.factor_defaults", "{}"))


def default_feeds(session) -> dict[str, np.ndarray]:
    """The factor inputs of an onnxruntime session at their exported values, to update
    with the embeddings (and any factor to change) before ``session.run``."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in factor_defaults(session).items()}


def _as_fused(bundle, factors, preset):
    from freebind.fusion.fused import FusedSpace

    if isinstance(bundle, FusedSpace):
        return bundle.with_factors(*(factors or ()), preset=preset) if factors or preset \
            else bundle
    from freebind.run.targets import open as open_target

    target = open_target(os.fspath(bundle), factors=factors, preset=preset)
    if not target.is_bundle:
        raise UsageError(f"{bundle}: export needs a bundle (.safetensors or hf:…), not the "
                         f"plain space {target.ref!r}")
    return target.fused


def random_inputs(session, rows: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random unit rows for every embedding input of an onnxruntime session."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        if len(i.shape) == 2:
            x = rng.standard_normal((rows, int(i.shape[1]))).astype(np.float32)
            feeds[i.name] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return feeds


def verify_onnx(path, fused, rows: int = 8, seed: int = 0, factors: dict | None = None
                ) -> dict[str, float]:
    """Largest |onnxruntime − FusedSpace.fuse| per output on random inputs; ``factors``
    (``{"b2.audio": 0.3}``) are fed to the graph and given to ``fuse`` as overrides."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {**default_feeds(sess), **random_inputs(sess, rows, seed)}
    for name, value in (factors or {}).items():
        feeds[name] = np.asarray(value, dtype=np.float32)
    outs = sess.run(None, feeds)
    nested: dict[str, dict] = {}
    for name, arr in feeds.items():
        if arr.ndim == 2:
            ref, _, m = name.rpartition("/")
            nested.setdefault(ref, {})[m] = arr
    names = [o.name for o in sess.get_outputs()]
    want = fused.fuse(nested, factors=[f"{k}={v}" for k, v in (factors or {}).items()] or None,
                      modalities=names)
    return {n: float(np.abs(o - want[n].numpy()).max()) for n, o in zip(names, outs)}
