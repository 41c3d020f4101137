#!/bin/sh
printf 'Status: 418 Custom Reason\r\nContent-Type: text/plain\r\n\r\nteapot\n'
