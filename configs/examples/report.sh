#!/bin/sh
# The last job: runs only after both analyses succeeded.
echo "# ccd progress=50 writing report"
echo "report: left and right analyses finished at $(date)"
echo "# ccd progress=100 report written"
