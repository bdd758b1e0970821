/* ferry: the command line. Kept thin: everything else lives in libferry.a. */
#include <stdio.h>

int main(void)
{
    puts("ferry 0.1.0");
    return 0;
}
