#!/bin/sh
# Headers at once, then a line every 0.1 s for about QUERY_STRING seconds
# (default 60), with a silent grandchild in the same process group.
sleep 300 &
printf 'Content-Type: text/plain\r\n\r\n'
n=$(( ${QUERY_STRING:-60} * 10 ))
i=0
while [ "$i" -lt "$n" ]; do
    i=$((i + 1))
    echo "tick $i" || exit 1
    sleep 0.1
done
