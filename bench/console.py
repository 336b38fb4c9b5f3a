"""The benchmark's progress lines on stdout, stamped with the wall-clock time; every module prints through `say`."""

from __future__ import annotations

from datetime import datetime


def say(text: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)
