#!/bin/sh
echo "# cloudmesh status=done progress=0 pid=$$"
echo "Job b"
echo "# cloudmesh status=done progress=100 pid=$$"