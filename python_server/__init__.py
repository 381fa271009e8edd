"""A small asyncio RESP2 server (PING, ECHO, SET with EX/PX, GET) and the lab's positive
control (`--ghost-ms N`: on SIGTERM the process exits while a forked child keeps the
listening socket open for N ms). Standard library only: it runs in images whose python3
has no pip packages.
"""

from python_server.resp import ProtocolError, parse_command
from python_server.server import main

__all__ = ["ProtocolError", "main", "parse_command"]
