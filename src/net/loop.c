#include "loop.h"

#include <stdlib.h>
#include <string.h>

typedef struct xfer_ctx {
  sc_loop_done_cb cb;
  void *ud;
} xfer_ctx;

/* One per socket curl watches; freed in uv_close's callback because libuv
 * may still reference the handle until then. */
typedef struct sock_ctx {
  uv_poll_t poll;
  curl_socket_t fd;
  sc_loop_t *loop;
} sock_ctx;

struct sc_loop {
  uv_loop_t *uv;
  CURLM *multi;
  uv_timer_t curl_timer; /* curl's own timeouts */
  uv_timer_t wake;       /* bounds one sc_loop_run pass */
  int in_check;
};

static void check_multi(sc_loop_t *l) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(l->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode res = msg->data.result;
    xfer_ctx *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(l->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    if (x) {
      sc_loop_done_cb cb = x->cb;
      void *ud = x->ud;
      free(x);
      cb(easy, res, ud);
    }
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_ctx *c = h->data;
  int flags = 0, running;
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

static void free_sock(uv_handle_t *h) { free(h->data); }

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp,
                          void *socketp) {
  sc_loop_t *l = userp;
  sock_ctx *c = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (c) {
      uv_poll_stop(&c->poll);
      uv_close((uv_handle_t *)&c->poll, free_sock);
      curl_multi_assign(l->multi, s, NULL);
    }
    return 0;
  }
  if (!c) {
    c = calloc(1, sizeof(*c));
    if (!c) return -1;
    c->fd = s;
    c->loop = l;
    if (uv_poll_init_socket(l->uv, &c->poll, s) < 0) {
      free(c);
      return -1;
    }
    c->poll.data = c;
    curl_multi_assign(l->multi, s, c);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&c->poll, events, on_poll);
  return 0;
}

static void on_wake(uv_timer_t *t) { (void)t; }

sc_loop_t *sc_loop_default(void) {
  static sc_loop_t *loop;
  if (loop) return loop;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return NULL;
  sc_loop_t *l = calloc(1, sizeof(*l));
  if (!l) return NULL;
  l->uv = uv_default_loop();
  l->multi = curl_multi_init();
  if (!l->uv || !l->multi) {
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

int sc_loop_add(sc_loop_t *l, CURL *easy, sc_loop_done_cb cb, void *ud) {
  xfer_ctx *x = malloc(sizeof(*x));
  if (!x) return UV_ENOMEM;
  x->cb = cb;
  x->ud = ud;
  curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
  if (curl_multi_add_handle(l->multi, easy) != CURLM_OK) {
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
    return UV_EINVAL;
  }
  return 0;
}

void sc_loop_remove(sc_loop_t *l, CURL *easy) {
  xfer_ctx *x = NULL;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
  curl_multi_remove_handle(l->multi, easy);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
  free(x);
}

int sc_loop_run(sc_loop_t *l, double timeout) {
  uv_run_mode mode = UV_RUN_ONCE;
  if (timeout == 0) {
    mode = UV_RUN_NOWAIT;
  } else if (timeout > 0) {
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
