/* main.c - placeholder while the proxy core is being written (replaced in the next commits). */
#include <stdio.h>
int
main(void)
{
    puts("tandem " TANDEM_VERSION);
    return 1;
}
