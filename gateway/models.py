"""Which `model` names the gateway serves: the base, and the adapters the adapters topic lists.

The catalogue follows the compacted adapters topic (adapter_id → latest AdapterEvent) outside any
consumer group, as every inference consumer does, so each gateway process holds the same table
and nothing a restart would lose. It decides only what `GET /v1/models` lists and which names
are refused at once: an adapter id the topic has never mentioned is still sent, because the
consumers also find adapters lazily under their adapter root; the service's `adapter_not_found`
then becomes the 404.

Other bases (issue 11): `model="<base>"` or `"<base>:<adapter>"` naming a base other than the
gateway's own is sent with `base=` to that base's lane (LoraClient finds it in the catalogue; a
base nobody serves is `base_not_served`, a 404). A bare name is a base only when an adapter
announcement names it (else it is an adapter id, as before); `<base>:<adapter>` is unambiguous,
since an adapter id has no colon. Adapters are listed under the base their announcement names.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from gateway.errors import model_not_found
from schemas import InvalidEvent, decode_adapter_event
from schemas.limits import ADAPTER_ID_PATTERN, BASE_MODEL_PATTERN
from streamer.follower import TopicFollower
from streamer.transport import Transport

log = logging.getLogger(__name__)

BASE_ALIAS = "base"  # always names the base model, whatever its served name
_ADAPTER_ID_RE = re.compile(ADAPTER_ID_PATTERN)
_BASE_MODEL_RE = re.compile(BASE_MODEL_PATTERN)


@dataclass(frozen=True)
class ListedAdapter:
    adapter_id: str
    version: int
    created_s: int  # when its current version was published (epoch seconds)
    revision: int = 0  # the registry revision that chose `version` (a rollback is a higher one)
    base: str | None = None  # the base its announcement names (None: the gateway's own)


class ModelCatalogue:
    """`route(model)`: (base, adapter id), None for the gateway's own base and for no adapter;
    `resolve(model)`: the adapter id of a model of the own base. Both raise a 404 ApiError."""

    def __init__(self, base_name: str) -> None:
        self.base_name = base_name
        self.adapters: dict[str, ListedAdapter] = {}

    def resolve(self, model: str) -> str | None:
        if model in (self.base_name, BASE_ALIAS):
            return None
        for base in (self.base_name, BASE_ALIAS):  # `base:adapter`, as with several bases
            if model.startswith(base + ":"):
                model = model[len(base) + 1 :]
                break
        if not _ADAPTER_ID_RE.match(model):
            raise model_not_found(model)
        return model

    def route(self, model: str) -> tuple[str | None, str | None]:
        own = (self.base_name, BASE_ALIAS)
        base, colon, adapter_id = model.rpartition(":")
        if colon and base not in own:  # `<other base>:<adapter>`
            if not _BASE_MODEL_RE.match(base) or not _ADAPTER_ID_RE.match(adapter_id):
                raise model_not_found(model)
            return base, adapter_id
        if model not in own and model in self.other_bases():
            return model, None
        return None, self.resolve(model)

    def other_bases(self) -> set[str]:
        """The bases besides the gateway's own that adapter announcements name."""
        return {a.base for a in self.adapters.values() if a.base is not None} - {self.base_name, BASE_ALIAS}

    def listing(self) -> list[dict[str, object]]:
        """`GET /v1/models`'s data: the base first, then the adapters by id."""
        models: list[dict[str, object]] = [
            {"id": base, "object": "model", "created": 0, "owned_by": "lorastream", "root": base, "parent": None}
            for base in (self.base_name, *sorted(self.other_bases()))
        ]
        for adapter in sorted(self.adapters.values(), key=lambda a: a.adapter_id):
            models.append({
                "id": adapter.adapter_id,
                "object": "model",
                "created": adapter.created_s,
                "owned_by": "lorastream",
                "root": adapter.adapter_id,
                "parent": adapter.base if adapter.base not in (None, BASE_ALIAS) else self.base_name,
            })
        return models

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the adapters topic (as the consumers read it: bad records are skipped)."""
        if value is None:  # a tombstone
            if key:
                self.adapters.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            event = decode_adapter_event(value)
        except InvalidEvent as exc:
            log.warning("ignoring an adapters record: %s", exc)
            return
        if key is not None and key != event.adapter_id.encode():
            return  # not the id's own record (the consumers skip it too)
        if event.deleted:
            self.adapters.pop(event.adapter_id, None)
            return
        known = self.adapters.get(event.adapter_id)
        # as the consumers order them (adapters_topic): a rollback is a higher revision naming an older version
        if known is not None and (event.revision, event.version) < (known.revision, known.version):
            return
        self.adapters[event.adapter_id] = ListedAdapter(
            event.adapter_id, event.version, event.ts_ms // 1000, revision=event.revision, base=event.base_model
        )


class AdaptersFollower(TopicFollower):
    """Feeds a ModelCatalogue from the adapters topic, from its beginning."""

    name = "lorastream-gateway-adapters"

    def __init__(self, transport: Transport, topic: str, catalogue: ModelCatalogue) -> None:
        super().__init__(transport, topic, from_beginning=True)
        self._catalogue = catalogue

    def on_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self._catalogue.apply(key, value)
