"""The ceiling: a WSGI app that answers each benchmark URL from Python, with
no CGI at all, under the same gunicorn settings as gunicorn-cgid.

/cgi-bin/big answers 1 MiB, /cgi-bin/upload reads the body and answers its
length, anything else answers ``hello``.
"""

HELLO = b"hello\n"
BIG = b"x" * (1024 * 1024)
READ_SIZE = 1024 * 1024


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    ctype = "text/plain"
    if path.endswith("/big"):
        body, ctype = BIG, "application/octet-stream"
    elif path.endswith("/upload"):
        stream, total = environ["wsgi.input"], 0
        while True:
            chunk = stream.read(READ_SIZE)
            if not chunk:
                break
            total += len(chunk)
        body = b"%d\n" % total
    else:
        body = HELLO
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]
