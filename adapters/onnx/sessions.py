"""onnxruntime sessions: CUDA when it is there and starts, else CPU with one warning (or none, on a
machine without a GPU); threads and the sequential executor the scorer wants.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Sequence

import numpy as np

from xdream_ts.errors import UserError

_CUDA_FAILED = False  # remembered per process: do not retry (and re-warn) once CUDA failed to start


def gpu_visible() -> bool:
    """An NVIDIA device node exists (the driver is loaded): a GPU this process could use."""
    return os.path.exists("/dev/nvidiactl") or any(os.path.exists(f"/dev/nvidia{i}") for i in range(8))


def make_session(model_bytes: bytes, providers: str | None, threads: int, where: str) -> Any:
    """An ``onnxruntime.InferenceSession`` of a serialised model. ``providers``: None/'auto' (CUDA when
    it starts), 'cpu' or 'cuda'; ``threads``: intra-op threads (0 = onnxruntime's default); ``where``
    names the model in error messages."""
    import onnxruntime as ort

    global _CUDA_FAILED
    req = None if providers is None else str(providers).lower()
    if req not in (None, "auto", "cpu", "cuda"):
        raise UserError(f"unknown providers {providers!r}: use cpu, cuda, or leave it out (CUDA when available)")
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise UserError(f"threads must be a non-negative integer (0 = onnxruntime's default), got {threads!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # keep onnxruntime's own provider-loading noise off the console
    available = ort.get_available_providers()
    want_cuda = req == "cuda" or (req in (None, "auto") and "CUDAExecutionProvider" in available and not _CUDA_FAILED)

    def make(provs: list[str]) -> Any:
        try:
            return ort.InferenceSession(model_bytes, sess_options=so, providers=provs)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"onnxruntime cannot load {where}: {first[:300]}; check that the file is a valid ONNX model") from None

    if want_cuda and "CUDAExecutionProvider" in available:
        # onnxruntime logs its failure to load the CUDA libraries through the process-wide logger, which
        # has no getter: silence it for this one call and put back the default (warning) level.
        ort.set_default_logger_severity(4)
        try:
            sess = make(["CUDAExecutionProvider", "CPUExecutionProvider"])
        finally:
            ort.set_default_logger_severity(2)
        if "CUDAExecutionProvider" in sess.get_providers():
            return sess
        _CUDA_FAILED = True
        # Asked for CUDA, or a GPU is visible but CUDA did not start: worth a warning. On a machine
        # with no GPU at all (onnxruntime-gpu lists CUDA anyway), CPU is simply the right choice.
        if req == "cuda" or gpu_visible():
            warnings.warn(
                "onnxruntime could not start CUDAExecutionProvider (CUDA/cuDNN libraries missing?); "
                "running the model on CPU",
                RuntimeWarning,
                stacklevel=3,
            )
        return sess
    if want_cuda and req == "cuda":
        warnings.warn(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); "
            "running the model on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    return make(["CPUExecutionProvider"])


def dummy_input(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """A fixed random input (seed 0) for the forward passes that learn tensor shapes."""
    return np.random.default_rng(0).standard_normal(tuple(shape)).astype(dtype)
