"""PinnedStaging: one reusable host buffer (page-locked on CUDA) and its device twin.

Whatever goes to the device in pieces — a step's LoRA work-item table, an adapter's hundreds
of weight tensors — is packed into the host buffer and copied with one non-blocking copy. The
host buffer is reused: before it is handed out again, the previous copy out of it must have
finished (an event; usually long done). Host sizes are rounded up to a power of two bytes, which
is what PyTorch's pinned allocator hands out anyway, so `pinned_bytes` is what is page-locked; the
device twin is rounded up to 2 MiB only (the CUDA allocator's block), it is device memory.
On a CPU device there is no copy and no stream: the device twin is the host buffer itself.
"""

from __future__ import annotations

import torch

_DEVICE_BLOCK = 2 << 20  # bytes


def pinned_size(num_bytes: int) -> int:
    """Bytes allocated for a staging buffer of at least `num_bytes` (a power of two, >= 1 KiB)."""
    if num_bytes < 0:
        raise ValueError("num_bytes must be >= 0")
    return max(1024, 1 << max(0, num_bytes - 1).bit_length())


class PinnedStaging:
    def __init__(self, device: torch.device, dtype: torch.dtype, stream: torch.cuda.Stream | None = None) -> None:
        """`stream`: where the device twin is used (it is allocated there, so the caching allocator
        never hands it to another stream while copies on this one are pending); default: the current one."""
        self.device = device
        self.dtype = dtype
        self._stream = stream
        self._is_cuda = device.type == "cuda"
        self._host = torch.empty(0, dtype=dtype)
        self._device = self._host
        self._copied: torch.cuda.Event | None = None  # recorded after the last copy out of the host buffer

    @property
    def pinned_bytes(self) -> int:
        """Page-locked host bytes held (0 off CUDA)."""
        return self._host.nbytes if self._is_cuda else 0

    @property
    def device_bytes(self) -> int:
        """Device bytes held by the twin (0 off CUDA: it is the host buffer)."""
        return self._device.nbytes if self._is_cuda else 0

    def host(self, numel: int) -> torch.Tensor:
        """The first `numel` elements of the host buffer, free to write (the last copy out has ended)."""
        self._wait_copied()
        element = self._host.element_size()
        if self._host.numel() < numel:
            self._host = torch.empty(pinned_size(numel * element) // element, dtype=self.dtype, pin_memory=self._is_cuda)
            if not self._is_cuda:
                self._device = self._host
        if self._is_cuda and self._device.numel() < numel:
            size = -(-numel * element // _DEVICE_BLOCK) * _DEVICE_BLOCK // element
            with torch.cuda.stream(self._stream or torch.cuda.current_stream(self.device)):
                self._device = torch.empty(size, dtype=self.dtype, device=self.device)
        return self._host[:numel]

    def to_device(self, numel: int, stream: torch.cuda.Stream | None = None) -> torch.Tensor:
        """Copy the first `numel` host elements to the device twin (one non-blocking copy on
        `stream`, or the current one); returns the device view, valid in that stream's order."""
        if not self._is_cuda:
            return self._host[:numel]
        stream = stream or torch.cuda.current_stream(self.device)
        with torch.cuda.stream(stream):
            self._device[:numel].copy_(self._host[:numel], non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record(stream)
        return self._device[:numel]

    def _wait_copied(self) -> None:
        if self._copied is not None:
            self._copied.synchronize()
            self._copied = None
