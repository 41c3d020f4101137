#!/bin/sh
# Burns CPU forever, printing nothing.
while :; do :; done
