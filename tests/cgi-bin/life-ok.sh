#!/bin/sh
# The smallest CGI answer: for request floods.
printf 'Content-Type: text/plain\r\n\r\nok\n'
