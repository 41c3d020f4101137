/* Smallest useful CGI: a fixed header block and a six-byte body. */
#include <string.h>
#include <unistd.h>

int main(void)
{
    static const char out[] = "Content-Type: text/plain\r\n\r\nhello\n";
    size_t off = 0, len = sizeof(out) - 1;

    while (off < len) {
        ssize_t n = write(STDOUT_FILENO, out + off, len - off);
        if (n <= 0)
            return 1;
        off += (size_t)n;
    }
    return 0;
}
