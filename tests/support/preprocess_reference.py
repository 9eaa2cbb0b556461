"""The reference libraries' own preprocessing, importable in the test environment.

freebind re-implements each family's preprocessing without the reference packages' heavy
imports; the parity tests (``tests/test_preprocess_parity.py``) compare its input tensors with
the ones these functions make from the same files. Nothing here is used by freebind itself.

* ImageBind: ``imagebind.data`` (package ``imagebind-unofficial``, installed ``--no-deps``) is
  imported as written, with three of its imports provided here:

  - ``pkg_resources`` (gone from current setuptools): ``resource_filename`` only, the path of
    a file inside an installed package;
  - ``pytorchvideo``: its real ``pytorchvideo.data.clip_sampling`` (package ``pytorchvideo``,
    installed ``--no-deps``), imported without the package's ``__init__`` files (datasets,
    video decoders); ``transforms`` and ``EncodedVideo`` are video-only and left empty;
  - ``torchaudio``: torchaudio's own pure-Python ``compliance.kaldi`` and
    ``functional.resample`` from an unpacked torchaudio wheel kept *outside* the environment
    (``scripts/setup.sh`` puts it in ``.venv/reference/torchaudio``; ``import torchaudio``
    still fails everywhere else), imported without its native library; ``load`` decodes with
    soundfile into torchaudio's layout (``[channels, samples]`` float32 in [-1, 1]).

  The shims live in ``sys.modules`` only while ``imagebind.data`` is imported.
* LAION-CLAP: ``laion_clap.training.data`` (``get_audio_features``, ``int16_to_float32``,
  ``float32_to_int16``) and the hook's ``librosa.load(path, sr=48000)``; see
  :func:`clap_hook_audio`.
* OpenCLIP and InternVL: their libraries import as they are (``open_clip``,
  ``transformers``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: where scripts/setup.sh unpacks torchaudio's wheel (outside site-packages)
TORCHAUDIO_REF = Path(os.environ.get("FREEBIND_TORCHAUDIO_REF",
                                     ROOT / ".venv" / "reference" / "torchaudio"))


def missing(what: str):
    """Skip where a reference is not installed; in CI (``CI`` set) that is a failure, so the
    parity tests can never silently stop running there."""
    message = f"{what} is not installed (bash scripts/setup.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _bare(name: str, path) -> types.ModuleType:
    """A package module ``name`` searching ``path``, without running its ``__init__``."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    mod.__file__ = str(Path(path) / "__init__.py")
    mod.__package__ = name
    return mod


@contextlib.contextmanager
def _modules(entries: dict):
    """Put ``entries`` in ``sys.modules`` for the duration, then restore what was there."""
    saved = {k: sys.modules.get(k) for k in entries}
    sys.modules.update(entries)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


_CACHE: dict = {}


def torchaudio_reference() -> types.ModuleType:
    """torchaudio's pure-Python Kaldi fbank and resampler, plus a soundfile ``load``."""
    if "torchaudio" in _CACHE:
        return _CACHE["torchaudio"]
    pkg_dir = TORCHAUDIO_REF / "torchaudio"
    if not (pkg_dir / "compliance" / "kaldi.py").is_file():
        missing(f"torchaudio's Python sources ({pkg_dir})")
    import numpy as np
    import soundfile as sf
    import torch

    ta = _bare("torchaudio", pkg_dir)
    functional_pkg = _bare("torchaudio.functional", pkg_dir / "functional")
    compliance_pkg = _bare("torchaudio.compliance", pkg_dir / "compliance")
    transforms_pkg = _bare("torchaudio.transforms", pkg_dir / "transforms")
    ta.functional, ta.compliance, ta.transforms = functional_pkg, compliance_pkg, transforms_pkg
    extension = types.ModuleType("torchaudio._extension")
    extension._IS_TORCHAUDIO_EXT_AVAILABLE = False   # the native library is never loaded
    names = [k for k in sys.modules if k == "torchaudio" or k.startswith("torchaudio.")]
    with _modules({"torchaudio": ta, "torchaudio.functional": functional_pkg,
                   "torchaudio.compliance": compliance_pkg,
                   "torchaudio.transforms": transforms_pkg,
                   "torchaudio._extension": extension}):
        functional = importlib.import_module("torchaudio.functional.functional")
        # ``from torchaudio import functional as F`` (the transforms) finds its functions
        functional_pkg.__dict__.update({k: v for k, v in vars(functional).items()
                                        if not k.startswith("__")})
        kaldi = importlib.import_module("torchaudio.compliance.kaldi")
        transforms = importlib.import_module("torchaudio.transforms._transforms")
        for k in [k for k in sys.modules if k.startswith("torchaudio.") and k not in names]:
            sys.modules.pop(k)
    compliance_pkg.kaldi = kaldi
    transforms_pkg.MelSpectrogram = transforms.MelSpectrogram
    transforms_pkg.AmplitudeToDB = transforms.AmplitudeToDB
    transforms_pkg.Resample = transforms.Resample

    def load(path):
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)), rate

    ta.load = load
    _CACHE["torchaudio"] = ta
    return ta


def imagebind_data() -> types.ModuleType:
    """ImageBind's ``imagebind.data``, as written, over the shims of the module doc."""
    if "imagebind.data" in _CACHE:
        return _CACHE["imagebind.data"]
    for name in ("imagebind", "pytorchvideo"):
        if importlib.util.find_spec(name) is None:
            missing(name)
    ta = torchaudio_reference()
    from freebind.spaces import compat

    compat.import_torchvision()
    compat.import_bare("imagebind", "imagebind.models.multimodal_preprocessors", "imagebind",
                       "imagebind-unofficial")
    pv_dir = Path(importlib.util.find_spec("pytorchvideo").submodule_search_locations[0])
    pkg_resources = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        spec = importlib.util.find_spec(package)
        return str(Path(spec.submodule_search_locations[0]) / resource)

    pkg_resources.resource_filename = resource_filename
    encoded = types.ModuleType("pytorchvideo.data.encoded_video")
    encoded.EncodedVideo = None   # video decoding is not compared here
    shims = {"pkg_resources": pkg_resources, "torchaudio": ta,
             "torchaudio.functional": ta.functional, "torchaudio.compliance": ta.compliance,
             "torchaudio.compliance.kaldi": ta.compliance.kaldi,
             "pytorchvideo": _bare("pytorchvideo", pv_dir),
             "pytorchvideo.data": _bare("pytorchvideo.data", pv_dir / "data"),
             "pytorchvideo.transforms": types.ModuleType("pytorchvideo.transforms"),
             "pytorchvideo.data.encoded_video": encoded}
    shims["pytorchvideo"].transforms = shims["pytorchvideo.transforms"]
    with _modules({**shims, "imagebind.data": None, "pytorchvideo.data.clip_sampling": None}):
        sys.modules.pop("imagebind.data")
        sys.modules.pop("pytorchvideo.data.clip_sampling")
        data = importlib.import_module("imagebind.data")
    _CACHE["imagebind.data"] = data
    return data


def laion_clap_data() -> types.ModuleType:
    """LAION-CLAP's ``laion_clap.training.data`` as written (``get_audio_features``, the int16
    round trip, ``get_mel`` on torchaudio's MelSpectrogram), imported without the package's
    ``__init__``; its dataset-only imports (webdataset, wget, braceexpand) are empty modules
    while it is imported, and ``torchaudio`` is :func:`torchaudio_reference`."""
    if "laion_clap.training.data" in _CACHE:
        return _CACHE["laion_clap.training.data"]
    spec = importlib.util.find_spec("laion_clap")
    if spec is None:
        missing("laion_clap")
    ta = torchaudio_reference()
    from freebind.spaces import compat

    compat.import_torchvision()
    import transformers  # noqa: F401  (imported first: it probes for torchaudio on import)

    folder = Path(spec.submodule_search_locations[0])
    if str(folder) not in sys.path:   # the hook's own setup: `clap_module` is top-level there
        sys.path.append(str(folder))
    shims = {name: types.ModuleType(name) for name in ("webdataset", "wget", "braceexpand")}
    shims.update({"torchaudio": ta, "torchaudio.transforms": ta.transforms,
                  "torchaudio.functional": ta.functional})
    if "laion_clap" not in sys.modules:
        shims["laion_clap"] = _bare("laion_clap", folder)
    shims["laion_clap.training"] = _bare("laion_clap.training", folder / "training")
    with _modules({**shims, "laion_clap.training.data": None, "laion_clap.hook": None}):
        sys.modules.pop("laion_clap.training.data")
        sys.modules.pop("laion_clap.hook")
        data = importlib.import_module("laion_clap.training.data")
        hook = importlib.import_module("laion_clap.hook")
    _CACHE["laion_clap.training.data"], _CACHE["laion_clap.hook"] = data, hook
    return data


def laion_clap_hook() -> types.ModuleType:
    """LAION-CLAP's ``laion_clap.hook`` (``CLAP_Module``), imported as :func:`laion_clap_data`
    imports its data module."""
    laion_clap_data()
    return _CACHE["laion_clap.hook"]


def clap_hook_audio(path, fusion: bool, audio_cfg: dict, seed: int = 0) -> tuple:
    """``CLAP_Module.get_audio_embedding_from_filelist``'s preprocessing of one file, line by
    line: ``librosa.load(path, sr=48000)``, the int16 round trip, ``get_audio_features(...,
    480000, 'fusion' or 'rand_trunc', 'repeatpad')``: ``(features, the quantised 48 kHz
    signal)``. Its random choices (the fusion chunks and the crop of a long clip) are drawn
    from numpy's global RNG seeded with ``seed``."""
    import librosa
    import numpy as np
    import torch

    data = laion_clap_data()
    wave, _ = librosa.load(str(path), sr=48000)
    wave = data.int16_to_float32(data.float32_to_int16(wave))
    wave = torch.from_numpy(wave).float()
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return data.get_audio_features({}, wave, 480000,
                                       data_truncating="fusion" if fusion else "rand_trunc",
                                       data_filling="repeatpad", audio_cfg=audio_cfg), wave
    finally:
        np.random.set_state(state)
