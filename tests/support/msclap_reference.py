"""MS-CLAP's own code as the tests' reference (the ``msclap`` package, installed ``--no-deps``
by scripts/setup.sh; freebind never imports it).

The package's ``__init__`` imports ``CLAPWrapper`` and with it torchaudio, so the model code
(``msclap/models``) is imported as its own package (``msclap_models``) from the installed
files, and the two preprocessing methods freebind reproduces (``load_audio_into_tensor``,
``preprocess_text``, with ``default_collate``) are compiled from ``CLAPWrapper.py``'s source
on their own: they run as written, on an object holding what they read (``args``,
``tokenizer``, ``token_keys``; ``read_audio`` returns the decoded clip, since the wrapper's
own reads with torchaudio)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import random
import re
import sys
from pathlib import Path

import numpy as np
import torch
import yaml


def package_dir() -> Path:
    spec = importlib.util.find_spec("msclap")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("msclap is not installed (scripts/setup.sh installs it --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def models():
    """``msclap/models`` imported as the package ``msclap_models`` (its __init__ included)."""
    if "msclap_models" in sys.modules:
        return sys.modules["msclap_models"]
    folder = package_dir() / "models"
    spec = importlib.util.spec_from_file_location(
        "msclap_models", folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["msclap_models"] = module
    spec.loader.exec_module(module)
    return module


def config(version: str) -> argparse.Namespace:
    text = (package_dir() / "configs" / f"config_{version}.yml").read_text()
    return argparse.Namespace(**yaml.load(text, Loader=yaml.FullLoader))


def build_clap(version: str, text_folder: Path) -> torch.nn.Module:
    """msclap's ``CLAP`` with the release's YAML, as ``CLAPWrapper.load_clap`` builds it, the
    text tower from ``text_folder`` (a small random GPT-2 / BERT saved there: the folder
    name holds 'gpt2' or 'bert', which msclap's code branches on)."""
    args = config(version)
    return models().clap.CLAP(
        audioenc_name=args.audioenc_name, sample_rate=args.sampling_rate,
        window_size=args.window_size, hop_size=args.hop_size, mel_bins=args.mel_bins,
        fmin=args.fmin, fmax=args.fmax, classes_num=args.num_classes, out_emb=args.out_emb,
        text_model=str(text_folder), transformer_embed_dim=args.transformer_embed_dim,
        d_proj=args.d_proj).eval()


WRAPPER_METHODS = ("read_audio", "load_audio_into_tensor", "preprocess_audio", "default_collate",
                   "preprocess_text", "get_text_embeddings", "get_audio_embeddings",
                   "_get_text_embeddings", "_get_audio_embeddings")


class CentreCrop:
    """``random`` for CLAPWrapper's methods with ``randrange(k)`` fixed at ``k // 2``: the
    wrapper crops a longer clip at a random start, freebind at the centre; with this the
    wrapper's own code crops where freebind does."""

    @staticmethod
    def randrange(stop: int) -> int:
        return stop // 2


def _wrapper_methods(names, rng=random) -> dict:
    """CLAPWrapper's methods ``names`` compiled from its source, their globals the modules
    it imports: torchaudio is torchaudio's own Python code (``load`` through soundfile,
    ``transforms.Resample``; preprocess_reference.py), never its native library."""
    from preprocess_reference import torchaudio_reference

    ta = torchaudio_reference()
    source = (package_dir() / "CLAPWrapper.py").read_text()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CLAPWrapper")
    funcs = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace = {"np": np, "torch": torch, "random": rng, "re": re, "math": __import__("math"),
                 "collections": __import__("collections"), "torchaudio": ta,
                 "T": ta.transforms}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(package_dir() / "CLAPWrapper.py"),
                 "exec"), namespace)
    return {n: namespace[n] for n in names}


class Transformers4Tokenizer:
    """A transformers 5 tokenizer with transformers 4's ``encode_plus`` (which CLAPWrapper
    calls; transformers 5 removed it): in transformers 4 it is the single-text ``__call__``,
    with the same arguments."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def encode_plus(self, text, **kwargs):
        return self._tok(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


class Wrapper:
    """An object holding what CLAPWrapper's methods read (``args`` from the release's YAML,
    ``clap``, ``tokenizer``, ``token_keys``), with those methods themselves bound to it
    (``__init__``, which downloads weights, is the one part not run)."""

    def __init__(self, version: str, clap, tokenizer=None, rng=random):
        self.args = config(version)
        self.clap, self.use_cuda = clap, False
        self.tokenizer = Transformers4Tokenizer(tokenizer) if tokenizer is not None else None
        if "roberta" in self.args.text_model or "gpt" in self.args.text_model:
            self.token_keys = ["input_ids", "attention_mask"]
        else:
            self.token_keys = ["input_ids", "token_type_ids", "attention_mask"]
        self.np_str_obj_array_pattern = re.compile(r"[SaUO]")
        self.default_collate_err_msg_format = "default_collate: {}"
        for name, fn in _wrapper_methods(WRAPPER_METHODS, rng).items():
            setattr(self, name, fn.__get__(self))
