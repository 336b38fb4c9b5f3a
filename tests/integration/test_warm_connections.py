"""Connections to a real API server kept open between waves (kube/warming.py): a round opens one connection per
request, they are still open after longer idle than aiohttp's default keep-alive (15 s), and the next round reuses
them instead of opening new ones (no TLS handshakes). Counted from this process's own sockets (/proc)."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit

import pytest

from spotq.kube import warming
from spotq.kube.client import KubeClient
from spotq.settings import KubeSettings
from testenv import LocalCluster

pytestmark = pytest.mark.integration

ESTABLISHED = "01"


def open_connections(port: int) -> set[int]:
    """Inodes of this process's established TCP connections to `port`."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(int(target[8:-1]))
    found = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], int(fields[9])
                if remote_port == port and state == ESTABLISHED and inode in mine:
                    found.add(inode)
    return found


async def test_warm_connections_stay_open_past_aiohttps_keepalive_and_are_reused(local_cluster: LocalCluster) -> None:
    port = urlsplit(local_cluster.server_url).port
    assert port is not None
    kube = await KubeClient.connect(KubeSettings(kubeconfig=str(local_cluster.kubeconfig_path)), max_connections=16)
    others = open_connections(port)  # the test environment's own client
    try:
        assert await warming.warm(kube, 6) == 6
        first = open_connections(port) - others
        assert len(first) == 6
        await asyncio.sleep(17)  # longer than aiohttp's default keep-alive, shorter than the API server's 90 s
        assert open_connections(port) - others == first
        assert await warming.warm(kube, 6) == 6
        assert open_connections(port) - others == first  # the same six connections: no new handshake
    finally:
        await kube.close()
