#!/bin/sh
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Raw: yes\r\n\r\nok\n'
