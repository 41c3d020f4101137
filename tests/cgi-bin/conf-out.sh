#!/bin/sh
# Header blocks good and bad, chosen by QUERY_STRING.
case "$QUERY_STRING" in
  reason) printf 'Status: 418 Custom Reason\r\nContent-Type: text/plain\r\n\r\nteapot\n' ;;
  status999) printf 'Status: 999 Way Out\r\nContent-Type: text/plain\r\n\r\nnever\n' ;;
  status099) printf 'Status: 099\r\nContent-Type: text/plain\r\n\r\nnever\n' ;;
  te) printf 'Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n\r\n' ;;
  cl) printf 'Content-Length: 100\r\nContent-Type: text/plain\r\n\r\nhello' ;;
  cookies) printf 'Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\nContent-Type: text/plain\r\n\r\ncookies\n' ;;
  long) printf 'X-Long: %09000d\r\nContent-Type: text/plain\r\n\r\nnever\n' 0 ;;
  nocolon) printf 'Content-Type: text/plain\r\nthis line has no colon\r\n\r\nnever\n' ;;
  lf) printf 'Content-Type: text/plain\nX-Block: lf\n\nlf body\n' ;;
  crlf) printf 'Content-Type: text/plain\r\nX-Block: crlf\r\n\r\ncrlf body\n' ;;
  *) printf 'Content-Type: text/plain\r\n\r\ndefault\n' ;;
esac
