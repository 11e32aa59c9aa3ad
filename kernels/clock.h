/* Time for measurements and deadlines: one monotonic clock for the whole project. */
#ifndef IFN_CLOCK_H
#define IFN_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin: use differences). */
double ifn_seconds(void);

#endif
