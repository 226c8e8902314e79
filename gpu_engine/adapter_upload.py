"""AdapterUpload: an adapter's weights from host memory into its LoRA bank slot, in one transfer.

    pack     every A and B tensor into one staging buffer (page-locked on CUDA; host memcpys)
    copy     one non-blocking host→device copy of it, on the load stream
    scatter  the load stream waits for the compute stream (the slot's rows may still be read or
             zeroed by work already queued there), then one batched device copy into the rows
    publish  the compute stream waits on an event recorded after the scatter
So the transfer overlaps the step in flight, and the engine thread never waits for it (except
before reusing the staging buffer, for the previous upload's copy). A load is timed to its
completion: host packing plus the device time from the copy's start to the scatter's end, read
once the event has completed (`finished`). On a CPU device the same steps run without streams
or events: the staging buffer is the source of the scatter, and the load is done on return.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import torch

from gpu_engine.pinned_staging import PinnedStaging

MAX_UNREAD = 1024


class AdapterUpload:
    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self._is_cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._is_cuda else None
        self._staging = PinnedStaging(device, dtype, stream=self._stream)
        # uploads whose completion has not been read: (host seconds, start event, done event); the
        # oldest are forgotten beyond MAX_UNREAD when nobody reads them (a bank used without a cache)
        self._pending: deque[tuple[float, torch.cuda.Event | None, torch.cuda.Event | None]] = deque(maxlen=MAX_UNREAD)

    @property
    def pinned_bytes(self) -> int:
        """Page-locked host memory held for uploads (the staging buffer; 0 off CUDA)."""
        return self._staging.pinned_bytes

    @property
    def staging_device_bytes(self) -> int:
        return self._staging.device_bytes

    def write(self, destinations: Sequence[torch.Tensor], sources: Sequence[torch.Tensor]) -> None:
        """destinations[i] (device views, e.g. bank slot rows) <- sources[i] (host tensors, any float dtype)."""
        if len(destinations) != len(sources):
            raise ValueError("one source per destination")
        started = time.perf_counter()
        sizes = [t.numel() for t in sources]
        host = self._staging.host(sum(sizes))
        # pack, casting to the bank's dtype
        torch._foreach_copy_(list(host.split(sizes)), [t.reshape(-1) for t in sources])
        packed_s = time.perf_counter() - started
        if not self._is_cuda:
            torch._foreach_copy_(list(destinations), [v.view_as(d) for v, d in zip(host.split(sizes), destinations)])
            self._pending.append((time.perf_counter() - started, None, None))
            return
        start, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        compute = torch.cuda.current_stream(self.device)
        start.record(self._stream)
        staged = self._staging.to_device(sum(sizes), self._stream)  # the one host→device copy
        with torch.cuda.stream(self._stream):
            self._stream.wait_stream(compute)
            torch._foreach_copy_(list(destinations), [v.view_as(d) for v, d in zip(staged.split(sizes), destinations)])
            done.record(self._stream)
        compute.wait_event(done)
        self._pending.append((packed_s, start, done))

    def finished(self) -> list[float]:
        """Seconds each completed upload took (packing to the end of its scatter), oldest first; forgotten once read."""
        durations = []
        while self._pending:
            host_s, start, done = self._pending[0]
            if done is not None and not done.query():
                break
            self._pending.popleft()
            durations.append(host_s if done is None else host_s + start.elapsed_time(done) / 1000)
        return durations
