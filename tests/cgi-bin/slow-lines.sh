#!/bin/sh
# Headers at once, then three lines 0.1 s apart.
printf 'Content-Type: text/plain\r\n\r\n'
for i in 1 2 3; do
    echo "line $i"
    sleep 0.1
done
