"""A loopback-only network namespace, for a local Ray instance.

Ray's own servers (GCS, raylet, object manager, workers) listen on every interface whatever node address
they are given. A local instance is therefore only started inside a private network namespace whose
only interface is the loopback (``unshare(CLONE_NEWNET)``, with a user namespace when not root): nothing
it starts can be reached from another host, and nothing in it can reach another host either (servers it
talks to must run inside too). ``llmcompare study run --executor ray`` re-runs itself there;
``llmcompare load --executor ray`` without ``--address`` must be started there::

    python -m llmcompare.runner.netns llmcompare load -b llamacpp-server --clients 2 --executor ray ...

runs any command in a fresh loopback-only namespace (its exit status is the command's). Where namespaces
are refused, it stops with one line rather than listen on the network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

NETNS_ENV = "LLMCOMPARE_NETNS"
"""Set to 1 in a process that runs in a namespace made here (inherited by its children)."""
LEGACY_NETNS_ENV = "LLMCOMPARE_STUDY_NETNS"
"""The name the study executor used before the namespace moved here (still read)."""

#: Dies with the process that started it (SIGTERM), enters a new network namespace, brings the loopback
#: up, marks the environment, then becomes the command (argv[2:], looked up on PATH).
LAUNCHER = r"""
import ctypes, fcntl, os, signal, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(3)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x40000000) != 0:                      # CLONE_NEWNET
    if libc.unshare(0x10000000 | 0x40000000) != 0:     # CLONE_NEWUSER | CLONE_NEWNET
        err = ctypes.get_errno()
        print("llmcompare: error: cannot give the local Ray instance a private network namespace (%s); Ray's"
              " servers would listen on every interface: run as root or allow unprivileged user namespaces, or"
              " start Ray yourself and pass --address" % os.strerror(err), file=sys.stderr)
        os._exit(2)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write("0 %d 1" % uid)
    with open("/proc/self/gid_map", "w") as f:
        f.write("0 %d 1" % gid)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0))[:18])[1]   # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))                                 # SIOCSIFFLAGS IFF_UP
os.environ["LLMCOMPARE_NETNS"] = "1"
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    print("llmcompare: error: cannot run %s: %s" % (sys.argv[2], exc.strerror), file=sys.stderr)
    os._exit(127)
"""


def in_private_network() -> bool:
    """Whether this process runs in a loopback-only namespace made by :func:`run_in_private_network`."""
    return os.environ.get(NETNS_ENV) == "1" or os.environ.get(LEGACY_NETNS_ENV) == "1"


def run_in_private_network(argv: list[str]) -> int:
    """Run ``argv`` in a new network namespace with only the loopback; return its exit status. The
    child dies with this process; SIGTERM is passed on, Ctrl-C reaches it through the terminal."""
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(os.getpid()), *argv])

    def forward(signum, frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    prev = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue  # the child got the same Ctrl-C and is stopping
    finally:
        signal.signal(signal.SIGTERM, prev)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    return run_in_private_network(args)


if __name__ == "__main__":
    sys.exit(main())
