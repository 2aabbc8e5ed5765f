"""Per cell of the A/B: postprocess, forward stage and end-to-end medians and FPS, before and after, as a Markdown table."""

import json
import sys
from pathlib import Path


def records(run: Path) -> dict[str, dict]:
    return {r["cell_id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def stage(record: dict, name: str) -> float | None:
    return ((record.get("stages_ms") or {}).get(name) or {}).get("median")


def main(before: Path, after: Path) -> None:
    old, new = records(before), records(after)
    print("| cell | postprocess ms before → after | forward stage ms before → after | end to end ms before → after | end-to-end FPS before → after | flags after |")
    print("|---|---|---|---|---|---|")
    for cell_id, a in old.items():
        b = new.get(cell_id)
        if b is None or a.get("status") != "ok" or b.get("status") != "ok":
            print(f"| {a['model']} {a['precision']}/{a['backend']} | {a.get('status')} → {b and b.get('status')} | | | | |")
            continue
        label = f"{a['model']} {a['resolution'][0]}x{a['resolution'][1]} {a['precision']}/{a['backend']}"
        pa, pb = stage(a, "postprocess"), stage(b, "postprocess")
        fa, fb = stage(a, "forward"), stage(b, "forward")
        ea, eb = a["end_to_end_ms"]["median"], b["end_to_end_ms"]["median"]
        flags = ", ".join(k for k in ("contended", "drifted", "undersampled", "noisy") if b.get(k)) or "–"
        print(
            f"| {label} | {pa:.1f} → {pb:.1f} ({pa / pb:.2f}×) | {fa:.1f} → {fb:.1f} | {ea:.1f} → {eb:.1f} ({ea / eb:.2f}×) "
            f"| {a['end_to_end_fps']:.2f} → {b['end_to_end_fps']:.2f} | {flags} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
