#!/bin/sh
echo "done"
echo "# cloudmesh status=done progress=100 pid=$$"