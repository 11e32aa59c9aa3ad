#include "stop_seq.h"

#include <string.h>

bool stop_seq_scan(const char *const *stops, int n_stops, const char *text, size_t len, size_t checked,
                   size_t *match, size_t *safe)
{
    bool found = false;
    size_t best = len;
    for (int i = 0; i < n_stops; i++) {
        size_t n = strlen(stops[i]);
        if (n == 0 || n > len) continue;
        /* A match that ends in the new bytes starts at checked - n + 1 or later. */
        size_t from = checked + 1 > n ? checked + 1 - n : 0;
        for (size_t p = from; p + n <= len && p < best; p++)
            if (memcmp(text + p, stops[i], n) == 0) {
                best = p;
                found = true;
                break;
            }
    }
    if (found) {
        *match = best;
        return true;
    }
    size_t hold = 0;
    for (int i = 0; i < n_stops; i++) {
        size_t n = strlen(stops[i]);
        if (n == 0) continue;
        /* The longest proper prefix of stops[i] that the text ends with. */
        for (size_t k = n > len + 1 ? len : n - 1; k > hold; k--)
            if (memcmp(text + len - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    *safe = len - hold;
    return false;
}
