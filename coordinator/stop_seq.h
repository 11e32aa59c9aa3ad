/* Stop sequences over text that grows as tokens are generated.
 *
 * Generation stops when the text contains a stop sequence; the text from the match on is
 * never sent. While a stop sequence may still be completing (the text ends with one of its
 * prefixes), those bytes are held back, so a streamed client never sees part of a stop
 * sequence. */
#ifndef IFN_STOP_SEQ_H
#define IFN_STOP_SEQ_H

#include <stdbool.h>
#include <stddef.h>

/* text[0..len) is everything generated so far; bytes before `checked` were scanned by an
 * earlier call (pass the previous len). Returns true and sets *match to where the earliest
 * stop sequence starts if one is in the text; otherwise sets *safe to how many bytes may be
 * sent (len minus the longest tail that is a proper prefix of a stop sequence). Empty stop
 * strings are ignored. */
bool stop_seq_scan(const char *const *stops, int n_stops, const char *text, size_t len, size_t checked,
                   size_t *match, size_t *safe);

#endif
