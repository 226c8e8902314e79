"""Virtual token counters (VTC) across tenants, after S-LoRA's fair scheduler. Pure Python, no torch.

A tenant is one adapter id (None = the base model, a tenant of its own). Each tenant has a counter
of the service it received: prompt tokens fed cost PREFILL_WEIGHT each, output tokens produced
cost DECODE_WEIGHT each (wp=1, wq=2 in Sheng et al., "Fairness in Serving Large Language Models",
OSDI'24). The scheduler admits the tenant with the smallest counter next.

A tenant is *active* while it has waiting or running work. When an idle tenant becomes active its
counter is lifted to the smallest counter among active tenants (or, when none is active, to the
counter of the last tenant that went idle), so a tenant cannot bank service while it is idle.
Counters only ever grow, which lets the minimum over active tenants live in a lazy heap: an entry
whose key is stale is smaller than the truth, so it surfaces, is refreshed and sinks again.
"""

from __future__ import annotations

import heapq

Tenant = str | None

PREFILL_WEIGHT = 1.0  # wp: per prompt token fed to the model
DECODE_WEIGHT = 2.0  # wq: per output token produced


def service_cost(prompt_tokens: int, output_tokens: int) -> float:
    """Virtual cost of feeding `prompt_tokens` prompt tokens and producing `output_tokens` tokens."""
    return PREFILL_WEIGHT * prompt_tokens + DECODE_WEIGHT * output_tokens


class VirtualTokenCounters:
    """Counters per tenant, with lift on (re)activation. All operations O(log active tenants) amortized."""

    def __init__(self) -> None:
        self._counter: dict[Tenant, float] = {}
        self._active: dict[Tenant, int] = {}  # active tenant -> token of its live heap entry
        self._heap: list[tuple[float, int, Tenant]] = []  # (counter when pushed, token, tenant)
        self._next_token = 0
        self._floor = 0.0  # counter of the last tenant to go idle when nothing stayed active

    def __getitem__(self, tenant: Tenant) -> float:
        return self._counter.get(tenant, self._floor)

    def is_active(self, tenant: Tenant) -> bool:
        return tenant in self._active

    @property
    def num_active(self) -> int:
        return len(self._active)

    def snapshot(self) -> dict[Tenant, float]:
        return dict(self._counter)

    def min_active(self) -> float | None:
        """The smallest counter among active tenants; None when no tenant is active."""
        heap = self._heap
        while heap:
            value, token, tenant = heap[0]
            if self._active.get(tenant) != token:
                heapq.heappop(heap)  # the tenant went idle since
                continue
            current = self._counter[tenant]
            if value != current:
                heapq.heapreplace(heap, (current, token, tenant))  # stale (smaller) key: refresh
                continue
            return value
        return None

    def activate(self, tenant: Tenant) -> None:
        """The tenant got work after having none: lift its counter so idle time is not banked."""
        if tenant in self._active:
            return
        floor = self.min_active()
        if floor is None:
            floor = self._floor
        counter = max(self._counter.get(tenant, floor), floor)
        self._counter[tenant] = counter
        token = self._next_token
        self._next_token += 1
        self._active[tenant] = token
        heapq.heappush(self._heap, (counter, token, tenant))
        if len(self._heap) > 2 * len(self._active) + 64:  # drop dead entries now and then
            self._heap = [entry for entry in self._heap if self._active.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)

    def deactivate(self, tenant: Tenant) -> None:
        """The tenant has no waiting or running work any more."""
        if self._active.pop(tenant, None) is None:
            return
        if not self._active:
            self._floor = max(self._floor, self._counter[tenant])
            self._heap.clear()

    def charge(self, tenant: Tenant, cost: float) -> None:
        if cost:
            self._counter[tenant] = self[tenant] + cost
