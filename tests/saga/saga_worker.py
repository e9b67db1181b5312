"""The process the resume tests kill: starts one ``crashy`` saga and runs until SIGKILLed.

python saga_worker.py DATABASE_URL TABLE_PREFIX LEDGER MARKER HANG_AT [FAIL_AT]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from saga_ledger import CrashData, Ledger, crash_saga, make_engine

from edgeway.saga import OrchestratorConfig, SagaOrchestrator


async def main(url: str, prefix: str, ledger: str, marker: str, hang_at: str, fail_at: str | None) -> None:
    saga = crash_saga(Ledger(Path(ledger)), fail_at=fail_at, hang_at=hang_at, marker=Path(marker))
    # A short lease, so the test's process can take over soon after the kill.
    config = OrchestratorConfig(lease=1.0, poll_interval=0.05)
    orchestrator = SagaOrchestrator(make_engine(url), [saga], config=config, table_prefix=prefix)
    await orchestrator.start()
    await orchestrator.run("crashy", CrashData(order_id="o-1"))
    await asyncio.sleep(3600)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], args[2], args[3], args[4], args[5] if len(args) > 5 else None))
