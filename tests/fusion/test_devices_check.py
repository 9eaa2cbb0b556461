"""Device and precision checked before any work (issue 34): a name that is no device is bad
usage (exit 2); a device this machine lacks, or fp16 on a CPU, is a failure here (exit 1)."""

from __future__ import annotations

import pytest
import torch

from freebind.fusion.devices import check_device_and_precision
from freebind.util.errors import SpaceError, UsageError

FLAGS = {"device": "--device", "precision": "--precision"}


def test_a_name_that_is_no_device_is_bad_usage():
    with pytest.raises(UsageError, match="--device 'gpu': not a device"):
        check_device_and_precision("gpu", names=FLAGS)


def test_a_device_this_machine_lacks_is_named():
    with pytest.raises(SpaceError, match="--device cuda:99") as err:
        check_device_and_precision("cuda:99", names=FLAGS)
    assert err.value.exit_code == 1


def test_fp16_needs_a_gpu_and_bf16_runs_on_a_cpu():
    with pytest.raises(SpaceError, match="--precision fp16 needs a GPU"):
        check_device_and_precision("cpu", "fp16", names=FLAGS)
    check_device_and_precision("cpu", "bf16", names=FLAGS)
    check_device_and_precision("cpu", "fp32", names=FLAGS)


def test_the_environment_variables_are_checked_and_named(monkeypatch):
    monkeypatch.setenv("FREEBIND_DEVICE", "tpu-ish")
    with pytest.raises(UsageError, match=r"\$FREEBIND_DEVICE 'tpu-ish'"):
        check_device_and_precision(None, names=FLAGS)
    monkeypatch.setenv("FREEBIND_DEVICE", "cpu")
    monkeypatch.setenv("FREEBIND_PRECISION", "fp16")
    with pytest.raises(SpaceError, match=r"\$FREEBIND_PRECISION fp16"):
        check_device_and_precision(None, names=FLAGS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_cpu_only_torch():
    with pytest.raises(SpaceError, match="no CUDA device here"):
        check_device_and_precision("cuda", names=FLAGS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_fp16_on_a_gpu():
    check_device_and_precision("cuda", "fp16", names=FLAGS)
    check_device_and_precision("cuda:0", "bf16", names=FLAGS)
