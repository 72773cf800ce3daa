"""The router's configuration: one frozen object, units in the names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._address import check_endpoint
from ..config import DEFAULT_ROUTER
from ..errors import ConfigurationError
from ..protocol import MAX_MESSAGE_SIZE

# Beside a router on ipc://PATH the results actor binds PATH.results-<role>
# (children.py); the longest of these suffixes must fit in a socket path as well.
RESULTS_IPC_SUFFIX = len(".results-ingest")


@dataclass(frozen=True, kw_only=True)
class RouterConfig:
    bind: str = DEFAULT_ROUTER
    data_dir: Path = Path("zq-data")
    results_backend: str = "sqlite"
    result_expires_s: float = 86400.0
    host_timeout_s: float = 10.0
    max_message_size: int = MAX_MESSAGE_SIZE
    max_queue_length: int | None = None
    # How often an acks_late task whose actor died is handed out again before it fails;
    # a task's own ``max_redeliveries`` option wins.
    max_redeliveries: int = 3
    journal_fsync: bool = False
    # After a restart, dispatch waits this long for actors to re-announce what they hold.
    resync_grace_s: float = 2.0
    log_level: str = "INFO"
    curve_secret_key: str | None = None
    curve_authorized_dir: str | None = None
    # On tcp, the ports the results actor binds (ingest, query, pub) on the router's
    # host; None: any free ones (kept across restarts). Fixed ports are what a firewall,
    # a container's published ports or a Kubernetes Service need.
    results_ports: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        # Refused here, before a data dir is made or locked and before anything starts.
        check_endpoint(self.bind, bind=True, room=RESULTS_IPC_SUFFIX)
        if self.results_ports is not None:
            ports = self.results_ports
            if len(ports) != 3 or len(set(ports)) != 3 \
                    or not all(0 < port < 65536 for port in ports):
                raise ConfigurationError("--results-ports needs three different ports "
                                         "(ingest, query, pub), each 1-65535")
            if not self.bind.startswith("tcp://"):
                raise ConfigurationError("--results-ports is for a router on tcp://")
