"""Loopback ports and the torchrun command line the tests start training processes with."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_train(nproc: int) -> list[str]:
    """`python` arguments running mimic.workflows.train under torchrun with `nproc` ranks: a static rendezvous
    on a free loopback port (--master_port 0 hangs and --standalone is slow here)."""
    return [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "mimic.workflows.train",
    ]
