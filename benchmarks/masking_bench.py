"""How long ``mask_text`` takes on adversarial text, against the pattern it replaced.

``python benchmarks/masking_bench.py`` prints one line per input size. The old
user-info pattern tried a URL scheme at every letter and scanned the rest of
the run each time: quadratic in a run of letters (seconds at 120 kB, minutes
at 2 MB). It is timed only up to a size where it still ends quickly.
"""

from __future__ import annotations

import re
import time

from geofailover_core.masking import MASK, mask_text

_OLD_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_OLD_LIMIT = 64 * 1024


def _old(text: str) -> str:
    return _OLD_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def _seconds(fn: object, text: str) -> float:
    start = time.perf_counter()
    fn(text)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    print(f"{'input':>28} {'size':>9} {'mask_text':>11} {'old pattern':>12}")
    for size in (16 * 1024, 64 * 1024, 512 * 1024, 2 * 1024 * 1024):
        for label, text in (("a run of letters", "a" * size), ("'redis://' + letters", "redis://" + "a" * size)):
            new = _seconds(mask_text, text)
            old = f"{_seconds(_old, text):10.3f} s" if size <= _OLD_LIMIT else "(not run)"
            print(f"{label:>28} {size:>9} {new:9.4f} s {old:>12}")


if __name__ == "__main__":
    main()
