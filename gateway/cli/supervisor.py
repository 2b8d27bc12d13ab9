"""The worker supervisor for `gateway serve --workers N`: uvicorn's, except for SIGHUP.

uvicorn restarts every worker on SIGHUP. The gateway wants SIGHUP to mean "re-read the
routing YAML", which each worker already does by itself (gateway.config.reload) without
dropping connections, and which leaves a worker serving its last good config when the new
file is broken (a restarted worker would have none). So the supervisor forwards the signal.
"""

from __future__ import annotations

import logging
import os
import signal

from uvicorn.supervisors import Multiprocess

log = logging.getLogger("gateway")


class ConfigReloadingMultiprocess(Multiprocess):
    def handle_hup(self) -> None:
        log.info("SIGHUP: asking %d workers to reload the config", len(self.processes))
        for process in self.processes:
            if process.pid and process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGHUP)
                except ProcessLookupError:
                    pass
