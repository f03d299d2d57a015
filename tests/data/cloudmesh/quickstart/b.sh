#!/bin/sh
for i in 1 10 20 30 40 50 60 70 80 90 100
do
  cms progress $i
  sleep 0.1
done