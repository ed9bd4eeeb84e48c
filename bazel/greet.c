#include "greet.h"

#include <stdio.h>

int greet_format(char *buf, size_t len, const char *name)
{
    return snprintf(buf, len, "Hello, %s!", name ? name : "world");
}
