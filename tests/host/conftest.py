"""Fixtures of the host adapters' tests: libvirt's test driver on an empty host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def test_conn(tmp_path: Path) -> Iterator[object]:
    """A fresh libvirt test-driver connection with no domains (each test its own)."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
    node = tmp_path / "node.xml"
    node.write_text("<node/>\n")
    conn = libvirt.open(f"test://{node}")
    try:
        yield conn
    finally:
        conn.close()
