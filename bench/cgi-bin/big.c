/* Streams exactly 1 MiB of body in 64 KiB writes. */
#include <string.h>
#include <unistd.h>

#define BODY_SIZE (1024 * 1024)
#define CHUNK (64 * 1024)

static int write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(void)
{
    static char chunk[CHUNK];
    static const char head[] =
        "Content-Type: application/octet-stream\r\n"
        "Content-Length: 1048576\r\n"
        "\r\n";
    size_t sent;

    memset(chunk, 'x', sizeof(chunk));
    if (write_all(head, sizeof(head) - 1) != 0)
        return 1;
    for (sent = 0; sent < BODY_SIZE; sent += CHUNK)
        if (write_all(chunk, CHUNK) != 0)
            return 1;
    return 0;
}
