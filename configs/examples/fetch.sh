#!/bin/sh
# Pretends to fetch a data set. Uses cloudmesh-cc's progress marker, which ccd also reads.
echo "# cloudmesh status=running progress=10 pid=$$"
echo "fetching ${DATASET:-demo} ..."
sleep 0.2
echo "# cloudmesh status=done progress=100 pid=$$"
