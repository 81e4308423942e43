"""Where cache buffers live: host numpy arrays or device OrtValues, behind one small interface."""
from __future__ import annotations

import numpy as np


class HostMemory:
    device_type, device_id = "cpu", 0

    def allocate(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def copy_prefix(self, new: np.ndarray, old: np.ndarray, tokens: int) -> None:
        """The first `tokens` rows of every old slot into `new` (which may have more slots)."""
        new[:len(old), :, :tokens] = old[:, :, :tokens]

    def pointer(self, buf: np.ndarray) -> int:
        return buf.ctypes.data


class DeviceMemory:
    """Buffers in accelerator memory (CUDA, DirectML) allocated through onnxruntime."""

    def __init__(self, device_type: str, device_id: int = 0):
        self.device_type, self.device_id = device_type, device_id

    def allocate(self, shape, dtype):
        import onnxruntime as ort
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device_type, self.device_id)

    def copy_prefix(self, new, old, tokens: int) -> None:
        # Growth is rare: stage through the host rather than carry a device copy kernel.
        before = old.numpy()
        host = np.zeros(new.shape(), before.dtype)
        host[:len(before), :, :tokens] = before[:, :, :tokens]
        new.update_inplace(host)

    def pointer(self, buf) -> int:
        return buf.data_ptr()
