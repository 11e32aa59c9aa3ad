/* The session table: sequences whose KV slot outlives their request (scheduler.h, Sessions).
 *
 * Owns: the list s->sessions and s->held[] (which session's KV a slot holds), creating a session
 * under a random id, finding one, releasing it after a request (kept, or rolled back to where
 * the request started, or ended when a cancelled request's ring dropped entries), ending it
 * (deleted, expired after session_ttl idle, evicted as the least recently used idle one when a
 * request needs its slot, aborted), and the session metrics.
 *
 * Invariants (all under s->lock): n_sessions is the list's length; a busy session has exactly
 * one request queued or running on it and is never ended; held[ss->kv.slot] == ss whenever
 * that slot is set; ending a session frees its KV and its slot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "scheduler_internal.h"

/* Unlinks a session and frees it and its slot (under lock). */
void session_end(scheduler *s, session *ss, const char *reason)
{
    for (session **link = &s->sessions; *link; link = &(*link)->next)
        if (*link == ss) {
            *link = ss->next;
            break;
        }
    if (ss->kv.slot >= 0 && s->held[ss->kv.slot] == ss) s->held[ss->kv.slot] = NULL;
    s->n_sessions--;
    if (s->met) {
        metrics_add(s->met, s->mid.sessions_ended, reason, 1);
        metrics_set(s->met, s->mid.sessions, s->n_sessions);
    }
    free(ss->kv.hist);
    free(ss);
}

session *session_find(scheduler *s, const char *id)
{
    for (session *ss = s->sessions; ss; ss = ss->next)
        if (strcmp(ss->id, id) == 0) return ss;
    return NULL;
}

/* A new session with the request's ring, marked busy and linked in (under lock). */
ifn_status session_new(scheduler *s, const sched_request *r, session **out)
{
    session *ss = calloc(1, sizeof *ss);
    if (!ss) return ifn_error_set(IFN_ERR_NOMEM, "no memory for a session");
    uint8_t raw[SCHED_SESSION_ID_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        free(ss);
        return ifn_error_set(IFN_ERR_INTERNAL, "no random bytes for a session id");
    }
    for (size_t i = 0; i < sizeof raw; i++) snprintf(ss->id + 2 * i, 3, "%02x", raw[i]);
    ifn_status st = kvseq_init(&ss->kv, r);
    if (st != IFN_OK) {
        free(ss);
        return st;
    }
    ss->busy = true;
    ss->next = s->sessions;
    s->sessions = ss;
    s->n_sessions++;
    if (s->met) metrics_set(s->met, s->mid.sessions, s->n_sessions);
    *out = ss;
    return IFN_OK;
}

ifn_status scheduler_delete_session(scheduler *s, const char *id)
{
    ifn_status st = IFN_OK;
    pthread_mutex_lock(&s->lock);
    session *ss = session_find(s, id);
    if (!ss) st = ifn_error_set(IFN_ERR_NOT_FOUND, "session_id: no session %s", id);
    else if (ss->busy) st = ifn_error_set(IFN_ERR_BUSY, "session_id: session %s has a request queued or running", id);
    else session_end(s, ss, "deleted");
    pthread_mutex_unlock(&s->lock);
    return st;
}

int scheduler_sessions(scheduler *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n_sessions;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* A session's KV after its request ended (under lock): kept as it is; or, for a request that
 * did not finish, rolled back to where it started, which a ring that dropped entries cannot
 * be (the session then ends). */
void session_release(scheduler *s, seq *q, sched_finish why)
{
    session *ss = q->sess;
    ss->busy = false;
    ss->last_used = ifn_seconds();
    if (why == SCHED_CANCELLED || why == SCHED_DEADLINE || why == SCHED_SHUTDOWN) {
        if (q->discards > 0) {
            session_end(s, ss, "aborted");
            return;
        }
        if (ss->kv.len > q->start_len) ss->kv.len = q->start_len;
        ss->kv.n_hist = q->start_hist;
    }
    if (ss->kv.slot >= 0) s->held[ss->kv.slot] = ss;
}

/* A slot for a queued request (under lock): its session's, a free one, or the least recently
 * used idle session's, which ends; -1 if every slot is busy. */
int session_find_slot(scheduler *s, const seq *q)
{
    if (q->kv->slot >= 0) return q->kv->slot; /* an idle session's own: nothing else uses it */
    session *lru = NULL;
    for (int slot = 0; slot < s->n_slots; slot++) {
        if (s->running[slot]) continue;
        if (!s->held[slot]) return slot;
        if (!s->held[slot]->busy && (!lru || s->held[slot]->last_used < lru->last_used)) lru = s->held[slot];
    }
    if (!lru) return -1;
    int slot = lru->kv.slot;
    session_end(s, lru, "evicted");
    return slot;
}

/* Ends sessions idle for longer than their time to live (under lock). */
void session_expire_idle(scheduler *s, double now)
{
    for (session *ss = s->sessions, *next; ss; ss = next) {
        next = ss->next;
        if (!ss->busy && now - ss->last_used > s->lim.session_ttl) session_end(s, ss, "expired");
    }
}
