#!/bin/sh
echo "hello"
sleep 3
echo "# cloudmesh status=done progress=100 pid=$$"