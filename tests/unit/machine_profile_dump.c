/* machine_profile_get on a file, for test_machine_profile.py: prints whether the profile was
 * measured or read, then its figures (%.17g, so that equal figures print equal).
 *   machine_profile_dump PATH THREADS */
#include <stdio.h>
#include <stdlib.h>

#include "machine_profile.h"

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    machine_profile p;
    if (machine_profile_get(argv[1], atoi(argv[2]), &p) != IFN_OK) {
        fprintf(stderr, "machine_profile_dump: %s\n", ifn_error_detail());
        return 1;
    }
    printf("%s", p.measured ? "measured" : "read");
    for (int i = 0; i < MACHINE_BW_POINTS; i++) printf(" %.17g", p.bw_gbs[i]);
    printf(" %.17g %.17g\n", p.gflops, p.region_us);
    return 0;
}
