"""Pretends to analyse, printing ccd progress markers: `# ccd progress=NN message`.

Usage: analyze.py NAME STEPS
"""

import sys
import time


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "analysis"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    for step in range(1, steps + 1):
        time.sleep(0.1)
        percent = step * 100 // steps
        note = "halfway" if percent == 50 else f"step {step} of {steps}"
        # flush: ccd tails the log while the job runs
        print(f"# ccd progress={percent} {name}: {note}", flush=True)
    print(f"{name}: done")


if __name__ == "__main__":
    main()
