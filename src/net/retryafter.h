/* Retry-After (RFC 9110 10.2.3) on 429 and 503 answers: how long the site
 * asks this client (here: the proxy) to wait. DESIGN.md section 11. */
#ifndef SC_RETRYAFTER_H
#define SC_RETRYAFTER_H

#include <stddef.h>

/* A Retry-After value: delay-seconds (fractions accepted, as some sites and
 * the farm send them) or an HTTP-date, relative to `now` (seconds since
 * the epoch); a date in the past is 0. -1 when it is neither. */
double sc_retry_after_value(const char *v, size_t n, double now);
/* The Retry-After of a response's header block (CRLF lines, names in any
 * case), for a 429 or 503 status only; -1 when there is none to honour. */
double sc_retry_after(long status, const char *head, size_t len, double now);

#endif
