"""A parameter sweep built in Python instead of YAML, with the sweep decided at run time.

    python3 configs/examples/sweep.py            # run it here, like `ccctl run`
    python3 configs/examples/sweep.py --yaml     # print it as a workflow file
    python3 configs/examples/sweep.py --submit   # hand it to the running daemon

`sizes` writes a JSON list as an output; `square` is a matrix over that list (known only
once `sizes` has run) and a fixed list of factors; `total` needs the whole sweep and reads
every member's `value` as one JSON list.
"""

import json
import sys

from ccd.workflow import Workflow

SUM = "import json, sys; print('total', sum(map(int, json.loads(sys.argv[1]))))"

wf = (
    Workflow("sweep")
    .job("sizes", run="echo 'n=[1, 2, 3]' >> \"$CCD_OUTPUTS\"")
    .job(
        "square",
        needs="sizes",
        matrix={"n": "${{ jobs.sizes.outputs.n }}", "factor": [10, 100]},
        # Matrix values are also in the environment, as CCD_MATRIX_<key>.
        run='echo "value=$((CCD_MATRIX_n * CCD_MATRIX_n * CCD_MATRIX_factor))" >> "$CCD_OUTPUTS"',
    )
    .job(
        "total",
        needs="square",
        args=["${{ jobs.square.outputs.value }}"],
        run=f'python3 -c {SUM!r} "$1"',
    )
)

if __name__ == "__main__":
    if "--yaml" in sys.argv:
        print(wf.to_yaml(), end="")
    elif "--submit" in sys.argv:
        print(wf.submit())
    else:
        status = wf.run()
        print(json.dumps({j["name"]: j["state"] for j in status["jobs"]}, indent=1))
        sys.exit(0 if status["workflow"]["state"] == "succeeded" else 1)
