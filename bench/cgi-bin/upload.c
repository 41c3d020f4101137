/* Reads the request body from stdin to EOF and reports its size. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    static char buf[64 * 1024];
    unsigned long long total = 0;
    char out[128];
    int len;

    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0)
            break;
        if (n < 0)
            return 1;
        total += (unsigned long long)n;
    }
    len = snprintf(out, sizeof(out), "Content-Type: text/plain\r\n\r\n%llu\n",
                   total);
    if (len < 0 || write(STDOUT_FILENO, out, (size_t)len) != len)
        return 1;
    return 0;
}
