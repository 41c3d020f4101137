#!/bin/sh
# Location answers, chosen by QUERY_STRING.
case "$QUERY_STRING" in
  local) printf 'Location: /cgi-bin/conf-env.sh/after?from=redirect\r\n\r\n' ;;
  encoded) printf 'Location: /cgi-bin/conf-env.sh/a%%20b\r\n\r\n' ;;
  absolute) printf 'Location: http://elsewhere.example/landing\r\nSet-Cookie: kept=1\r\nX-Conf: kept\r\n\r\nignored body\n' ;;
  loop-*)
    echo "conf-redirect hop $QUERY_STRING" >&2
    printf 'Location: /cgi-bin/conf-redirect.sh?%s\r\n\r\n' "$QUERY_STRING" ;;
  *) printf 'Content-Type: text/plain\r\n\r\nno redirect\n' ;;
esac
