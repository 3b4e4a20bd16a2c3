"""Servers: the ones llmcompare starts and stops (:mod:`.managed`) and its own mock server for tests and
benchmarks (:mod:`.mock`)."""

from llmcompare.servers.managed import (
                                        LOOPBACK,
                                        PIDS_ENV,
                                        ManagedServer,
                                        Readiness,
                                        ServerFailed,
                                        command_line,
                                        free_port,
                                        log_tail,
                                        wait_for_guards,
)

__all__ = ["LOOPBACK", "PIDS_ENV", "ManagedServer", "Readiness", "ServerFailed", "command_line", "free_port", "log_tail",
           "wait_for_guards"]
