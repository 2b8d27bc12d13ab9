"""The worker supervisor for `gateway serve --workers N`: uvicorn's, with two changes.

- SIGHUP: uvicorn restarts every worker. The gateway wants it to mean "re-read the routing
  YAML", which each worker does by itself (gateway.config.reload) without dropping
  connections, and which leaves a worker serving its last good config when the new file is
  broken (a restarted worker would have none). So the supervisor forwards the signal.
- Shutdown: the supervisor first closes its own copy of the listening socket: once the
  draining workers close theirs, new connections are refused (a load balancer moves on)
  instead of queueing in a backlog that no process will ever accept from.
"""

from __future__ import annotations

import logging
import os
import signal

from uvicorn.supervisors import Multiprocess

log = logging.getLogger("gateway")


class GatewaySupervisor(Multiprocess):
    def handle_hup(self) -> None:
        log.info("SIGHUP: asking %d workers to reload the config", len(self.processes))
        for process in self.processes:
            if process.pid and process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    pass

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()
