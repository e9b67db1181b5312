"""The grpc_backend ledger as a process of its own (``python grpc_process.py NAME``): it prints
its port, then serves until killed. A test can stop it (SIGSTOP) as a host that stops answering
(its sockets stay open, nothing answers) and let it go on (SIGCONT)."""

from __future__ import annotations

import asyncio
import sys

from grpc_backend import backend


async def main(name: str) -> None:
    async with backend(name) as server:
        print(server.port, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
