#include <stdio.h>
#include <string.h>

#include "greet.h"

int main(void)
{
    char buf[64];
    int n = greet_format(buf, sizeof(buf), "bazel");

    if (n != 13 || strcmp(buf, "Hello, bazel!") != 0) {
        fprintf(stderr, "greet_format: got %d \"%s\"\n", n, buf);
        return 1;
    }
    n = greet_format(buf, 4, NULL);
    if (n != 13 || strcmp(buf, "Hel") != 0) {
        fprintf(stderr, "greet_format truncation: got %d \"%s\"\n", n, buf);
        return 1;
    }
    puts("PASS");
    return 0;
}
