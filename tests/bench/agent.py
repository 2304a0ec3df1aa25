"""A fake agent for the benchmarks: prints claude stream-json as fast as it can, or at a rate.

    python agent.py LINES [RATE_PER_S]

Each text line carries ``time.time_ns()`` when it was printed, for latency measurements.
Extra arguments (the flags the adapter adds) are ignored.
"""

import json
import sys
import time


def main() -> None:
    lines = int(sys.argv[1])
    rate = float(sys.argv[2]) if len(sys.argv) > 2 and not sys.argv[2].startswith("-") else 0.0
    out = sys.stdout
    out.write(
        json.dumps({"type": "system", "subtype": "init", "session_id": "bench", "model": "bench", "cwd": "."}) + "\n"
    )
    start = time.monotonic()
    for i in range(lines):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        out.write(f'{{"type":"assistant","message":{{"content":[{{"type":"text","text":"{time.time_ns()} {i}"}}]}}}}\n')
        if rate:
            out.flush()
    out.write(
        json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "bench"})
        + "\n"
    )
    out.flush()


if __name__ == "__main__":
    main()
