/* The control port: one line in, one line out (README.md). */
#include "farm.h"

#include <stdlib.h>
#include <string.h>

typedef struct ctl_s {
  uv_tcp_t tcp;
  struct ctl_s *prev, *next;
  int closing;
  size_t len;
  char buf[4096];
} ctl_t;

static uv_tcp_t ctl_server;
static int ctl_enabled;
static ctl_t *ctls;

static void ctl_close(ctl_t *ctl) {
  if (ctl->closing) return;
  ctl->closing = 1;
  if (ctl->prev) ctl->prev->next = ctl->next; else ctls = ctl->next;
  if (ctl->next) ctl->next->prev = ctl->prev;
  uv_close((uv_handle_t *)&ctl->tcp, on_free_handle);
}

static void on_ctl_sent(uv_write_t *req, int status) {
  msg_t *m = container_of(req, msg_t, req);
  if (m->quit) farm_stop(); /* "quit" exits once its OK is out */
  else if (status < 0) ctl_close(m->ctx);
  free(m);
}

/* `text` ends with the '\n' that sb_printf callers leave room for. */
static void ctl_reply(ctl_t *ctl, const char *text, size_t len, int quit) {
  if (send_copy((uv_stream_t *)&ctl->tcp, text, len, on_ctl_sent, ctl, quit) != 0) {
    if (quit) farm_stop(); else ctl_close(ctl);
  }
}

static proxy_t *ctl_proxy(char **rest, sbuf_t *out) {
  char *tok = strtok_r(NULL, " \t", rest);
  uint64_t i;
  if (tok == NULL || parse_u64(tok, &i) != 0) {
    sb_printf(out, "ERR missing or bad proxy index");
    return NULL;
  }
  if (i >= nproxies) {
    sb_printf(out, "ERR no proxy %llu (have %zu)", (unsigned long long)i, nproxies);
    return NULL;
  }
  return &proxies[i];
}

static void ctl_sync_reply(proxy_t *px, sbuf_t *out, const char *what) {
  int r = proxy_sync(px);
  if (r != 0) sb_printf(out, "ERR %u: %s", px->index, uv_strerror(r));
  else sb_printf(out, "OK %s %u %s %s", what, px->index,
                 kind_names[px->prof.kind], proxy_state(px));
}

static void ctl_command(ctl_t *ctl, char *line) {
  sbuf_t out = { 0 };
  char *rest = NULL, *cmd = strtok_r(line, " \t", &rest);
  proxy_t *px;
  int quit = 0;
  if (cmd == NULL) {
    sb_printf(&out, "ERR empty command");
  } else if (!strcmp(cmd, "ping")) {
    sb_printf(&out, "OK pong");
  } else if (!strcmp(cmd, "quit")) {
    sb_printf(&out, "OK bye");
    quit = 1;
  } else if (!strcmp(cmd, "stats")) {
    sb_printf(&out, "OK {\"accepted\":%llu,\"active\":%llu,\"per_proxy\":[",
              (unsigned long long)total_accepted, (unsigned long long)total_active);
    for (size_t i = 0; i < nproxies; i++)
      sb_printf(&out, "%s{\"index\":%zu,\"accepted\":%llu,\"active\":%llu,"
                "\"port\":%d,\"profile\":\"%s\",\"proto\":\"%s\",\"state\":\"%s\","
                "\"in_retry_window\":%llu}", i ? "," : "", i,
                (unsigned long long)proxies[i].accepted,
                (unsigned long long)proxies[i].active, proxies[i].port,
                kind_names[proxies[i].prof.kind], proto_names[proxies[i].prof.proto],
                proxy_state(&proxies[i]), (unsigned long long)proxies[i].in_window);
    sb_printf(&out, "]}");
  } else if (!strcmp(cmd, "profile")) {
    profile_t prof;
    char err[256];
    if ((px = ctl_proxy(&rest, &out)) != NULL) {
      char none[1] = "";
      int r = parse_profile(rest ? rest : none, &prof, NULL, err, sizeof err);
      if (r != 0) {
        sb_printf(&out, "ERR %s", r > 0 ? "missing profile" : err);
      } else if (prof.proto != P_SOCKS5 && prof.proto != px->prof.proto) {
        sb_printf(&out, "ERR a proxy keeps its proto (%s)", proto_names[px->prof.proto]);
      } else {
        prof.proto = px->prof.proto;
        px->prof = prof; /* new connections only: each conn has a copy */
        px->served = 0;
        ctl_sync_reply(px, &out, "profile");
      }
    }
  } else if (!strcmp(cmd, "down")) {
    if ((px = ctl_proxy(&rest, &out)) != NULL) {
      px->down = 1;
      while (px->conns) conn_close(px->conns, 1);
      ctl_sync_reply(px, &out, "down");
    }
  } else if (!strcmp(cmd, "up")) {
    if ((px = ctl_proxy(&rest, &out)) != NULL) {
      px->down = 0;
      px->served = 0;
      ctl_sync_reply(px, &out, "up");
    }
  } else {
    sb_printf(&out, "ERR unknown command '%s'", cmd);
  }
  sb_printf(&out, "\n");
  ctl_reply(ctl, out.p, out.len, quit);
  free(out.p);
}

static void on_ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  ctl_t *ctl = h->data;
  (void)sz;
  *buf = uv_buf_init(ctl->buf + ctl->len, (unsigned)(sizeof ctl->buf - ctl->len - 1));
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ctl_t *ctl = s->data;
  char *start, *nl;
  (void)buf;
  if (nread < 0) { ctl_close(ctl); return; }
  ctl->len += (size_t)nread;
  ctl->buf[ctl->len] = '\0';
  start = ctl->buf;
  while (!stopping && !ctl->closing && (nl = strchr(start, '\n')) != NULL) {
    *nl = '\0';
    if (nl > start && nl[-1] == '\r') nl[-1] = '\0';
    ctl_command(ctl, start);
    start = nl + 1;
  }
  if (stopping || ctl->closing) return;
  ctl->len -= (size_t)(start - ctl->buf);
  memmove(ctl->buf, start, ctl->len);
  if (ctl->len == sizeof ctl->buf - 1) {
    static const char msg[] = "ERR line too long\n";
    ctl_reply(ctl, msg, sizeof msg - 1, 0);
    ctl_close(ctl);
  }
}

static void on_ctl_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  ctl_t *ctl = xcalloc(1, sizeof *ctl);
  uv_tcp_init(loop, &ctl->tcp);
  ctl->tcp.data = ctl;
  ctl->next = ctls;
  if (ctls) ctls->prev = ctl;
  ctls = ctl;
  if (uv_accept(server, (uv_stream_t *)&ctl->tcp) != 0) { ctl_close(ctl); return; }
  uv_read_start((uv_stream_t *)&ctl->tcp, on_ctl_alloc, on_ctl_read);
}

/* ---------------------------------------------------------------- main */

int ctl_start(uint64_t *port) {
  struct sockaddr_in sin;
  struct sockaddr_storage ss;
  int len = sizeof ss, r;
  uv_ip4_addr("127.0.0.1", (int)*port, &sin);
  uv_tcp_init(loop, &ctl_server);
  if ((r = uv_tcp_bind(&ctl_server, (struct sockaddr *)&sin, 0)) != 0 ||
      (r = uv_listen((uv_stream_t *)&ctl_server, 16, on_ctl_connection)) != 0 ||
      (r = uv_tcp_getsockname(&ctl_server, (struct sockaddr *)&ss, &len)) != 0)
    return r;
  ctl_enabled = 1;
  *port = (uint64_t)get_port(&ss);
  return 0;
}

void ctl_stop(void) {
  if (ctl_enabled) uv_close((uv_handle_t *)&ctl_server, NULL);
  ctl_enabled = 0;
  while (ctls) ctl_close(ctls);
}
