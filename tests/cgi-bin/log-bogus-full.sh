#!/bin/sh
# A bad first header line, more stdout after it, and a line on stderr: every section of a full ScriptLog record.
echo "this is not a header"
echo "more stdout"
echo "an error" >&2
