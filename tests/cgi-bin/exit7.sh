#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\nbye\n'
exit 7
