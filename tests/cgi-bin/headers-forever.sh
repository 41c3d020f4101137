#!/bin/sh
# A header block that never ends.
exec yes "X-A: a"
