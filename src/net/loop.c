#include "loop.h"

#include <fcntl.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One per socket curl has shown us, kept until curl closes the socket
 * (close_socket) rather than until curl stops watching it: curl stops
 * and restarts watching a kept-alive connection for every transfer, and
 * libuv turns each uv_poll_stop/start into one to three epoll_ctl calls.
 *
 * A socket that has carried a whole transfer belongs to a set-up
 * connection, which curl closes through close_socket; when curl stops
 * watching such a socket it stays registered but "parked" (unref'd, so it
 * keeps no loop alive), and the first event on it, such as the proxy
 * closing an idle connection, unregisters it. Any other socket is
 * unregistered at once: curl 7.88 closes some sockets of failed connects
 * without the callback, and libuv aborts on a registration for a closed
 * fd. open_socket drops a record whose fd number comes back anyway.
 * Freed in uv_close's callback: libuv references the handle until then. */
typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  int events; /* UV_READABLE|UV_WRITABLE registered, 0 when stopped */
  int parked;
  int established; /* a transfer on it ended well */
  sc_loop_t *loop;
} sock_ctx;

struct sc_loop {
  uv_loop_t *uv;
  CURLM *multi;
  uv_timer_t curl_timer; /* curl's own timeouts */
  uv_timer_t wake;       /* bounds one sc_loop_run pass */
  int in_check;
  sock_ctx **socks; /* by fd */
  size_t nsocks;
  CURL **easy_cache; /* handles for the next transfers */
  char *easy_kept;    /* not reset: see sc_loop_easy_keep */
  size_t neasy;
};

/* enough for every transfer of a pass at the default max_inflight */
#define EASY_CACHE_MAX 256

static void free_sock(uv_handle_t *h) { free(h->data); }

static sock_ctx *sock_get(sc_loop_t *l, curl_socket_t s) {
  return s >= 0 && (size_t)s < l->nsocks ? l->socks[s] : NULL;
}

static void sock_drop(sc_loop_t *l, sock_ctx *c) {
  l->socks[c->fd] = NULL;
  uv_close((uv_handle_t *)&c->poll, free_sock); /* unregisters the fd */
}

static void check_multi(sc_loop_t *l) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(l->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode res = msg->data.result;
    sc_loop_xfer_t *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (x && x->detach && res == CURLE_OK) {
      curl_socket_t s = CURL_SOCKET_BAD;
      if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &s) == CURLE_OK &&
          s != CURL_SOCKET_BAD)
        x->detached = fcntl(s, F_DUPFD_CLOEXEC, 0);
    }
    if (x && x->detach == 2 && x->detached >= 0) {
      x->kept = 1;
    } else {
      curl_multi_remove_handle(l->multi, easy);
      curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    }
    if (!x) continue;
    if (res == CURLE_OK) {
      sock_ctx *c = sock_get(l, x->sock);
      if (c) c->established = 1;
    }
    x->cb(easy, res, x->ud);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *c = h->data;
  int flags = 0, running;
  if (c->parked) {
    uv_poll_stop(&c->poll);
    c->events = 0;
    return;
  }
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  sc_loop_t *l = c->loop;
  curl_multi_socket_action(l->multi, c->fd, flags, &running);
  check_multi(l);
}

static void on_curl_timer(uv_timer_t *t) {
  sc_loop_t *l = t->data;
  int running;
  curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi(l);
}

static int curl_timer_cb(CURLM *multi, long ms, void *userp) {
  sc_loop_t *l = userp;
  (void)multi;
  if (ms < 0) uv_timer_stop(&l->curl_timer);
  else uv_timer_start(&l->curl_timer, on_curl_timer, (uint64_t)ms, 0);
  return 0;
}


static sock_ctx *sock_new(sc_loop_t *l, curl_socket_t s) {
  if (s < 0) return NULL;
  if ((size_t)s >= l->nsocks) {
    size_t n = l->nsocks ? l->nsocks : 64;
    while (n <= (size_t)s) n *= 2;
    sock_ctx **v = realloc(l->socks, n * sizeof(*v));
    if (!v) return NULL;
    memset(v + l->nsocks, 0, (n - l->nsocks) * sizeof(*v));
    l->socks = v;
    l->nsocks = n;
  }
  sock_ctx *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->fd = s;
  c->loop = l;
  if (uv_poll_init_socket(l->uv, &c->poll, s) < 0) {
    free(c);
    return NULL;
  }
  c->poll.data = c;
  l->socks[s] = c;
  return c;
}

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp,
                          void *socketp) {
  sc_loop_t *l = userp;
  sock_ctx *c = sock_get(l, s);
  (void)socketp;
  if (what == CURL_POLL_REMOVE) {
    if (!c || c->parked) return 0;
    if (c->established) {
      c->parked = 1;
      uv_unref((uv_handle_t *)&c->poll);
    } else if (c->events) {
      uv_poll_stop(&c->poll);
      c->events = 0;
    }
    return 0;
  }
  if (!c && !(c = sock_new(l, s))) return -1;
  sc_loop_xfer_t *x = NULL;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
  if (x) x->sock = s;
  if (c->parked) {
    c->parked = 0;
    uv_ref((uv_handle_t *)&c->poll);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  if (events != c->events) {
    uv_poll_start(&c->poll, events, on_poll);
    c->events = events;
  }
  return 0;
}

/* Every socket curl opens for us is closed here (the connection keeps the
 * callback, so this holds for connections a share's cache closes too):
 * the poll handle must go before the fd number can be reused. */
static int close_socket(void *clientp, curl_socket_t s) {
  sock_ctx *c = sock_get(clientp, s);
  if (c) sock_drop(clientp, c);
  return close(s);
}

static curl_socket_t open_socket(void *clientp, curlsocktype purpose,
                                 struct curl_sockaddr *a) {
  (void)purpose;
  curl_socket_t s = socket(a->family, a->socktype, a->protocol);
  /* the number came back without close_socket: that record is stale */
  sock_ctx *c = sock_get(clientp, s);
  if (c) sock_drop(clientp, c);
  return s;
}

CURL *sc_loop_easy(sc_loop_t *l, int *kept) {
  *kept = 0;
  if (l->neasy) {
    l->neasy--;
    *kept = l->easy_kept[l->neasy];
    return l->easy_cache[l->neasy];
  }
  CURL *e = curl_easy_init();
  if (!e) return NULL;
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, l);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, l);
  return e;
}

static void easy_put(sc_loop_t *l, CURL *e, int kept) {
  if (l->neasy == EASY_CACHE_MAX) {
    curl_easy_cleanup(e);
    return;
  }
  /* a cached handle must not hold a share: the pool that owns it could
   * never clean it up (curl_easy_reset keeps shares too) */
  curl_easy_setopt(e, CURLOPT_SHARE, NULL);
  if (!kept) {
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, l);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, l);
  }
  l->easy_kept[l->neasy] = (char)kept;
  l->easy_cache[l->neasy++] = e;
}

void sc_loop_easy_done(sc_loop_t *l, CURL *e) {
  if (e) easy_put(l, e, 0);
}

void sc_loop_easy_keep(sc_loop_t *l, CURL *e) {
  if (e) easy_put(l, e, 1);
}

/* Once the pass's bound is reached the pass must not go on to sleep until
 * some other timer (curl's can be a minute away): stopping makes libuv's
 * poll timeout 0, and uv_run clears the flag when it returns. */
static void on_wake(uv_timer_t *t) { uv_stop(t->loop); }

sc_loop_t *sc_loop_default(void) {
  static sc_loop_t *loop;
  if (loop) return loop;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
  sc_loop_t *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->uv = uv_default_loop();
  l->multi = curl_multi_init();
  l->easy_cache = malloc(EASY_CACHE_MAX * sizeof(CURL *));
  l->easy_kept = malloc(EASY_CACHE_MAX);
  if (!l->uv || !l->multi || !l->easy_cache || !l->easy_kept) {
    if (l->multi) curl_multi_cleanup(l->multi);
    free(l->easy_cache);
    free(l->easy_kept);
    free(l);
    return NULL;
  }
  uv_timer_init(l->uv, &l->curl_timer);
  uv_timer_init(l->uv, &l->wake);
  l->curl_timer.data = l;
  /* the wake timer only bounds a pass; it must not keep the loop alive */
  uv_unref((uv_handle_t *)&l->wake);
  curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
  curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
  curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
  curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
  /* many proxies, few hosts each: keep enough idle connections around */
  curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, 1024L);
  loop = l;
  return l;
}

uv_loop_t *sc_loop_uv(sc_loop_t *l) { return l->uv; }
CURLM *sc_loop_multi(sc_loop_t *l) { return l->multi; }

int sc_loop_add(sc_loop_t *l, CURL *easy, sc_loop_xfer_t *x) {
  curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
  if (curl_multi_add_handle(l->multi, easy) != CURLM_OK) {
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    return UV_EINVAL;
  }
  return 0;
}

void sc_loop_remove(sc_loop_t *l, CURL *easy) {
  curl_multi_remove_handle(l->multi, easy);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
}

int sc_loop_run(sc_loop_t *l, double timeout) {
  uv_run_mode mode = UV_RUN_ONCE;
  if (timeout == 0) {
    mode = UV_RUN_NOWAIT;
  } else if (timeout > 0) {
    /* the bound counts from now, not from the clock libuv cached at its
     * last pass: after a busy stretch of Lua that clock is far behind */
    uv_update_time(l->uv);
    uv_timer_start(&l->wake, on_wake, (uint64_t)(timeout * 1000.0 + 0.999), 0);
    uv_ref((uv_handle_t *)&l->wake);
  }
  uv_run(l->uv, mode);
  uv_timer_stop(&l->wake);
  uv_unref((uv_handle_t *)&l->wake);
  return uv_loop_alive(l->uv);
}

double sc_loop_now(void) { return (double)uv_hrtime() / 1e9; }

int sc_loop_fd(sc_loop_t *l) { return uv_backend_fd(l->uv); }
int sc_loop_timeout(sc_loop_t *l) { return uv_backend_timeout(l->uv); }
