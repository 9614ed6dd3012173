"""Reference timing for the CVSS bench: PyPI `cvss` scoring the CTIBench-VSP gold vectors.

Called by `cargo bench -p metis-verify --bench cvss_vsp`, which times Metis on the same list in
the same run. Mirrors the measuring code of the reference notes: for every vector,
`CVSS3(vector)` + `.base_score` + `.severities()`, 5 passes, per-item median and best.
Prints one JSON object: {"per_item_ns_median", "per_item_ns_best", "score_sum", "n"}.
"""

import json
import statistics
import sys
import time

from cvss import CVSS3


def main() -> None:
    vectors = [line.strip() for line in sys.stdin if line.strip()]
    passes = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    times = []
    total = 0.0
    for _ in range(passes):
        total = 0.0
        t0 = time.perf_counter()
        for v in vectors:
            c = CVSS3(v)
            total += float(c.base_score)
            c.severities()
        times.append((time.perf_counter() - t0) / len(vectors) * 1e9)
    print(json.dumps({
        "per_item_ns_median": statistics.median(times),
        "per_item_ns_best": min(times),
        "score_sum": round(total, 1),
        "n": len(vectors),
    }))


if __name__ == "__main__":
    main()
