#!/bin/sh
echo "start"
echo "# cloudmesh status=done progress=100 pid=$$"