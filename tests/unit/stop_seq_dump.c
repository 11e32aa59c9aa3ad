/* Feeds stop_seq_scan the way the scheduler does, for test_stop_seq.py.
 * stdin, one case per line: STOP1|STOP2|...<TAB>CHUNK1|CHUNK2|... (bytes other than | and tab)
 * stdout, one line per case: for each chunk appended, "m<offset>" if a stop matched (and the
 * case ends there) or "s<safe>", separated by spaces. */
#include <stdio.h>
#include <string.h>

#include "stop_seq.h"

int main(void)
{
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(line, '\t');
        if (!tab) return 2;
        *tab = '\0';
        const char *stops[16];
        int n_stops = 0;
        for (char *p = line, *bar; p && n_stops < 16; p = bar ? bar + 1 : NULL) {
            bar = strchr(p, '|');
            if (bar) *bar = '\0';
            stops[n_stops++] = p;
        }
        char text[8192];
        size_t len = 0, checked = 0;
        for (char *p = tab + 1, *bar; p; p = bar ? bar + 1 : NULL) {
            bar = strchr(p, '|');
            size_t n = bar ? (size_t)(bar - p) : strlen(p);
            memcpy(text + len, p, n);
            len += n;
            size_t match, safe;
            if (stop_seq_scan(stops, n_stops, text, len, checked, &match, &safe)) {
                printf("m%zu ", match);
                break;
            }
            printf("s%zu ", safe);
            checked = len;
        }
        putchar('\n');
    }
    return 0;
}
