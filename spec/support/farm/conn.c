/* Connection plumbing shared by every protocol: closing, draining, the
 * relay with its faults (slow, tamper, drop_mid), the upstream connect,
 * and the answers the farm gives in the target's place (block,
 * ratelimit). */
#include "farm.h"

#include <stdlib.h>
#include <string.h>

static char discard_buf[READ_CHUNK];

void log_request(conn_t *c, const char *action) {
  if (logfp == NULL) return;
  /* SOCKS5 lines keep their old form; other protocols say which */
  fprintf(logfp, "port=%d atyp=%u host=%s dstport=%d action=%s%s%s\n",
          c->px->port, c->atyp, c->host, c->dport, action,
          c->prof.proto == P_SOCKS5 ? "" : " proto=",
          c->prof.proto == P_SOCKS5 ? "" : proto_names[c->prof.proto]);
  fflush(logfp);
}

static void on_conn_handle_close(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles == 0) free(c);
}

static void set_rst(uv_tcp_t *t) {
  uv_os_fd_t fd;
  struct linger l = { 1, 0 };
  if (uv_fileno((uv_handle_t *)t, &fd) == 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/* Closes both sockets; reset=1 makes them send RST instead of FIN so that
 * the peer sees an error and not a clean end of stream. */
void conn_close(conn_t *c, int reset) {
  if (c->closing) return;
  c->closing = 1;
  if (c->prev) c->prev->next = c->next; else c->px->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (!c->inner) {
    c->px->active--;
    total_active--;
  }
  free(c->fwd);
  c->fwd = NULL;
  while (c->q_head) {
    chunk_t *ch = c->q_head;
    c->q_head = ch->next;
    free(ch);
  }
  side_t *sides[2] = { &c->cli, &c->tgt };
  for (int i = 0; i < 2; i++) {
    if (!sides[i]->open) continue;
    if (reset) set_rst(&sides[i]->tcp);
    uv_close((uv_handle_t *)&sides[i]->tcp, on_conn_handle_close);
  }
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_close);
}

static void side_init(conn_t *c, side_t *s, side_t *peer) {
  uv_tcp_init(loop, &s->tcp);
  s->tcp.data = c;
  s->c = c;
  s->peer = peer;
  s->open = 1;
  c->handles++;
}

/* Small writes (protocol replies, control lines) are copied, so callers
 * can use stack buffers; `ctx` is the conn_t or ctl_t that gets the error. */
int send_copy(uv_stream_t *s, const void *data, size_t len,
                     uv_write_cb cb, void *ctx, int quit) {
  msg_t *m = xrealloc(NULL, sizeof *m + len);
  m->ctx = ctx;
  m->quit = quit;
  memcpy(m->data, data, len);
  uv_buf_t b = uv_buf_init(m->data, (unsigned)len);
  int r = uv_write(&m->req, s, &b, 1, cb);
  if (r != 0) free(m);
  return r;
}

static void on_cli_sent(uv_write_t *req, int status) {
  msg_t *m = container_of(req, msg_t, req);
  conn_t *c = m->ctx;
  free(m);
  if (status < 0 && !c->closing) conn_close(c, 0);
}

void cli_send(conn_t *c, const void *data, size_t len) {
  if (send_copy((uv_stream_t *)&c->cli.tcp, data, len, on_cli_sent, c, 0) != 0)
    conn_close(c, 0);
}

/* A SOCKS5 reply with a zero IPv4 bind address. */

void on_discard_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  (void)h; (void)sz;
  *buf = uv_buf_init(discard_buf, sizeof discard_buf);
}

void on_discard_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0) conn_close(s->data, 0);
}

static void on_close_timer(uv_timer_t *t) { conn_close(t->data, 0); }

static void on_drain_shutdown(uv_shutdown_t *req, int status) {
  side_t *s = req->data;
  if (status < 0 && !s->c->closing) conn_close(s->c, 0);
}

/* Ends a connection after our last reply: send FIN after queued writes,
 * then read and discard until the client closes (closing with unread data
 * would RST and could destroy the reply), or give up after LINGER_MS. */
void conn_drain(conn_t *c) {
  if (c->closing) return;
  c->st = S_DRAIN;
  uv_read_stop((uv_stream_t *)&c->cli.tcp);
  uv_read_start((uv_stream_t *)&c->cli.tcp, on_discard_alloc, on_discard_read);
  c->cli.shut = 1;
  c->cli.shut_req.data = &c->cli;
  if (uv_shutdown(&c->cli.shut_req, (uv_stream_t *)&c->cli.tcp, on_drain_shutdown) != 0) {
    conn_close(c, 0);
    return;
  }
  uv_timer_start(&c->timer, on_close_timer, LINGER_MS, 0);
}

/* Finds the end of an HTTP header block across chunk boundaries.  Returns
 * the offset just past "\r\n\r\n" (state becomes 4), or n if not found. */
size_t hdr_scan(unsigned *state, const char *p, size_t n) {
  static const char end[] = "\r\n\r\n";
  size_t i = 0;
  for (; i < n && *state < 4; i++) {
    if (p[i] == end[*state]) (*state)++;
    else *state = p[i] == '\r' ? 1 : 0;
  }
  return i;
}

/* ---------------------------------------------------------------- relay */

static void relay_start(conn_t *c);
static void on_relay_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_chunk_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  (void)h; (void)sz;
  chunk_t *ch = malloc(sizeof *ch);
  *buf = ch ? uv_buf_init(ch->data, READ_CHUNK) : uv_buf_init(NULL, 0);
}

static void side_pause(side_t *s) {
  if (s->paused) return;
  s->paused = 1;
  uv_read_stop((uv_stream_t *)&s->tcp);
}

/* Resumes reading `s` once the data it produced has mostly drained. */
static void side_maybe_resume(side_t *s) {
  conn_t *c = s->c;
  if (!s->paused || s->eof || c->dropping || c->closing) return;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&s->peer->tcp) >= LOW_WATER) return;
  if (s == &c->tgt && c->q_bytes >= LOW_WATER) return;
  s->paused = 0;
  uv_read_start((uv_stream_t *)&s->tcp, on_chunk_alloc, on_relay_read);
}

static void on_drop_timer(uv_timer_t *t) { conn_close(t->data, 1); }

static void on_relay_written(uv_write_t *req, int status) {
  chunk_t *ch = container_of(req, chunk_t, req);
  side_t *from = ch->from;
  conn_t *c = from->c;
  int kill = ch->kill;
  free(ch);
  if (c->closing) return;
  if (status < 0) { conn_close(c, 1); return; }
  if (kill) {
    /* drop_mid: the bytes are in the kernel; an RST right now would make
     * the client's kernel discard them unread, so give it a moment. */
    uv_read_stop((uv_stream_t *)&c->cli.tcp);
    uv_timer_start(&c->timer, on_drop_timer, DROP_MS, 0);
    return;
  }
  side_maybe_resume(from);
}

static void relay_write(chunk_t *ch) {
  side_t *from = ch->from, *to = from->peer;
  uv_buf_t b = uv_buf_init(ch->data, (unsigned)ch->len);
  if (uv_write(&ch->req, (uv_stream_t *)&to->tcp, &b, 1, on_relay_written) != 0) {
    free(ch);
    conn_close(from->c, 1);
    return;
  }
  if (uv_stream_get_write_queue_size((uv_stream_t *)&to->tcp) > HIGH_WATER)
    side_pause(from);
}

static void on_relay_shutdown(uv_shutdown_t *req, int status) {
  side_t *s = req->data;
  conn_t *c = s->c;
  if (c->closing) return;
  if (status < 0) { conn_close(c, 1); return; }
  s->shut_done = 1;
  /* Both directions finished: nothing more can flow. */
  if (c->cli.eof && c->tgt.eof && c->cli.shut_done && c->tgt.shut_done)
    conn_close(c, 0);
}

/* Half-close: the FIN goes out after everything queued before it. */
static void side_shutdown(side_t *s) {
  if (s->shut) return;
  s->shut = 1;
  s->shut_req.data = s;
  if (uv_shutdown(&s->shut_req, (uv_stream_t *)&s->tcp, on_relay_shutdown) != 0)
    conn_close(s->c, 1);
}

/* slow: writes the target->client chunks whose delay has passed. */
static void on_slow_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  uint64_t now = uv_now(loop);
  while (c->q_head && c->q_head->due <= now && !c->closing) {
    chunk_t *ch = c->q_head;
    c->q_head = ch->next;
    if (c->q_head == NULL) c->q_tail = NULL;
    c->q_bytes -= ch->len;
    relay_write(ch);
  }
  if (c->closing) return;
  if (c->q_head) {
    uv_timer_start(&c->timer, on_slow_timer, c->q_head->due - now, 0);
  } else if (c->q_eof) {
    c->q_eof = 0;
    side_shutdown(&c->cli);
  }
  side_maybe_resume(&c->tgt);
}

static void slow_enqueue(conn_t *c, chunk_t *ch) {
  ch->next = NULL;
  ch->due = uv_now(loop) + c->delay_ms / 10;
  if (c->q_tail) c->q_tail->next = ch; else c->q_head = ch;
  c->q_tail = ch;
  c->q_bytes += ch->len;
  if (c->q_bytes > HIGH_WATER) side_pause(&c->tgt);
  if (!uv_is_active((uv_handle_t *)&c->timer))
    uv_timer_start(&c->timer, on_slow_timer, ch->due - uv_now(loop), 0);
}

static void on_relay_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  side_t *s = (uv_tcp_t *)stream == &c->cli.tcp ? &c->cli : &c->tgt;
  chunk_t *ch = buf->base ? container_of(buf->base, chunk_t, data) : NULL;
  if (nread <= 0) {
    free(ch);
    if (nread == 0 || c->closing) return;
    if (nread != UV_EOF) { conn_close(c, 1); return; } /* pass the RST on */
    s->eof = 1;
    uv_read_stop(stream);
    if (s == &c->tgt && c->q_head) c->q_eof = 1; /* FIN after the delayed data */
    else side_shutdown(s->peer);
    return;
  }
  ch->len = (size_t)nread;
  ch->from = s;
  ch->kill = 0;
  if (s == &c->tgt) {
    switch (c->prof.kind) {
    case K_TAMPER: {
      /* Only the body of the first response: headers stay byte-exact. */
      size_t i = c->hdr_state < 4 ? hdr_scan(&c->hdr_state, ch->data, ch->len) : 0;
      for (; i < ch->len; i++)
        if (ch->data[i] == 'a') ch->data[i] = '4';
      break;
    }
    case K_DROP_MID: {
      uint64_t room = c->prof.bytes - c->down_bytes;
      if (room == 0) { free(ch); conn_close(c, 1); return; }
      if (ch->len >= room) {
        ch->len = (size_t)room;
        ch->kill = 1;
        c->dropping = 1;
        side_pause(s);
      }
      c->down_bytes += ch->len;
      break;
    }
    case K_SLOW:
      slow_enqueue(c, ch);
      return;
    default:
      break;
    }
  }
  relay_write(ch);
}

static void relay_start(conn_t *c) {
  if (c->closing) return;
  c->st = S_RELAY;
  /* HTTP absolute-form: the rewritten request head, then what followed */
  if (c->fwd) {
    chunk_t *ch = xrealloc(NULL, sizeof *ch);
    ch->from = &c->cli;
    ch->kill = 0;
    ch->len = c->fwd_len;
    memcpy(ch->data, c->fwd, ch->len);
    free(c->fwd);
    c->fwd = NULL;
    relay_write(ch);
    if (c->closing) return;
  }
  /* Bytes the client pipelined behind its request go first. */
  if (c->hs_len > c->hs_off) {
    chunk_t *ch = xrealloc(NULL, sizeof *ch);
    ch->from = &c->cli;
    ch->kill = 0;
    ch->len = c->hs_len - c->hs_off;
    memcpy(ch->data, c->hs + c->hs_off, ch->len);
    c->hs_off = c->hs_len;
    relay_write(ch);
    if (c->closing) return;
  }
  uv_read_start((uv_stream_t *)&c->cli.tcp, on_chunk_alloc, on_relay_read);
  uv_read_start((uv_stream_t *)&c->tgt.tcp, on_chunk_alloc, on_relay_read);
}

/* The upstream is there: the protocol says so, then bytes flow. */
static void granted(conn_t *c) {
  switch (c->prof.proto) {
  case P_SOCKS5: socks5_reply(c, 0); break;
  case P_SOCKS4: socks4_reply(c, 0); break;
  default: http_reply(c, 0); break;
  }
  if (c->closing) return;
  relay_start(c);
}

static void refused(conn_t *c, int err) {
  switch (c->prof.proto) {
  case P_SOCKS5: socks5_reply(c, err); break;
  case P_SOCKS4: socks4_reply(c, err); break;
  default: http_reply(c, err); break;
  }
  conn_drain(c);
}

static void on_reply_timer(uv_timer_t *t) { granted(t->data); }

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->data;
  if (c->closing) return;
  if (status < 0) {
    log_request(c, "failed");
    refused(c, status);
    return;
  }
  log_request(c, "ok");
  uv_tcp_nodelay(&c->tgt.tcp, 1);
  if (c->prof.kind == K_SLOW) {
    c->st = S_REPLYING;
    uv_timer_start(&c->timer, on_reply_timer, c->delay_ms, 0);
    return;
  }
  granted(c);
}

/* --------------------------------------------- answers in the target's place */

void canned_respond(conn_t *c) {
  static const char block_body[] =
    "<!DOCTYPE html>\n<html><head><title>Attention Required</title></head>\n"
    "<body><h1>Attention Required</h1>\n"
    "<p>Please complete the captcha below to continue.</p>\n"
    "<div class=\"captcha\">captcha</div></body></html>\n";
  static const char slow_body[] = "Too Many Requests: slow down\n";
  static const char ok_body[] = "ratelimit: served\n";
  char head[512];
  const char *body = block_body, *status = "403 Forbidden", *type = "text/html";
  char extra[64] = "";
  if (c->canned_status == 429) {
    body = slow_body;
    status = "429 Too Many Requests";
    type = "text/plain";
    snprintf(extra, sizeof extra, "Retry-After: %g\r\n", c->prof.wait);
  } else if (c->canned_status == 200) {
    body = ok_body;
    status = "200 OK";
    type = "text/plain";
  }
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %s\r\nServer: scatter-farm\r\n%s"
                   "Content-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n\r\n", status, extra, type, strlen(body));
  cli_send(c, head, (size_t)n);
  if (!c->closing) cli_send(c, body, strlen(body));
  conn_drain(c);
}

static void on_block_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (nread < 0) { conn_close(c, 0); return; }
  hdr_scan(&c->hdr_state, buf->base, (size_t)nread);
  if (c->hdr_state == 4) canned_respond(c);
}

/* ratelimit: every n-th connection is asked to wait `wait` seconds. */
static int ratelimit_status(conn_t *c) {
  proxy_t *px = c->px;
  if (px->served % c->prof.n != 0) return 200;
  px->retry_from = uv_now(loop) + RETRY_GRACE_MS;
  px->retry_until = uv_now(loop) + (uint64_t)(c->prof.wait * 1000);
  return 429;
}

void conn_serve(conn_t *c) {
  if (c->prof.kind == K_BLOCK || c->prof.kind == K_RATELIMIT) {
    c->canned_status = c->prof.kind == K_BLOCK ? 403 : ratelimit_status(c);
    log_request(c, c->prof.kind == K_BLOCK ? "blocked"
                   : c->canned_status == 429 ? "ratelimited" : "answered");
    if (!c->tunnel) { canned_respond(c); return; }
    /* a tunnel: say yes without connecting, then answer its request */
    switch (c->prof.proto) {
    case P_SOCKS5: socks5_reply(c, 0); break;
    case P_SOCKS4: socks4_reply(c, 0); break;
    default: http_reply(c, 0); break;
    }
    if (c->closing) return;
    c->st = S_BLOCK_HEAD;
    hdr_scan(&c->hdr_state, (char *)c->hs + c->hs_off, c->hs_len - c->hs_off);
    if (c->hdr_state == 4) { canned_respond(c); return; }
    uv_read_stop((uv_stream_t *)&c->cli.tcp);
    uv_read_start((uv_stream_t *)&c->cli.tcp, on_discard_alloc, on_block_read);
    return;
  }
  if (c->prof.kind == K_FLAKY && rng_unit() < c->prof.p) {
    log_request(c, "flaky");
    refused(c, 1);
    return;
  }
  /* Nothing more from the client until the target is there. */
  uv_read_stop((uv_stream_t *)&c->cli.tcp);
  c->st = S_CONNECTING;
  side_init(c, &c->tgt, &c->cli);
  c->creq.data = c;
  int r = uv_tcp_connect(&c->creq, &c->tgt.tcp, (struct sockaddr *)&c->dst, on_connect);
  if (r != 0) {
    log_request(c, "failed");
    refused(c, r);
  }
}

/* ---------------------------------------------------------------- accept */

static void on_hs_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)sz;
  *buf = uv_buf_init((char *)c->hs + c->hs_len, (unsigned)(HS_MAX - c->hs_len));
}

static void on_hs_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  (void)buf;
  if (nread < 0) { conn_close(c, 0); return; } /* EOF, error or hs full */
  c->hs_len += (size_t)nread;
  switch (c->prof.proto) {
  case P_SOCKS5: socks5_process(c); break;
  case P_SOCKS4: socks4_process(c); break;
  default: http_process(c); break;
  }
}

/* Accepts one client of px (inner: the plain side of an https proxy, not
 * counted again) and starts its profile; NULL when the accept failed. */
conn_t *conn_new(proxy_t *px, uv_stream_t *server, int inner) {
  conn_t *c = xcalloc(1, sizeof *c);
  c->px = px;
  c->prof = px->prof;
  c->inner = inner;
  if (inner) c->prof.proto = P_HTTP;
  side_init(c, &c->cli, &c->tgt);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->handles++;
  c->next = px->conns;
  if (px->conns) px->conns->prev = c;
  px->conns = c;
  if (!inner) {
    px->active++;
    total_active++;
  }
  if (uv_accept(server, (uv_stream_t *)&c->cli.tcp) != 0) {
    conn_close(c, 0);
    return NULL;
  }
  if (c->prof.kind == K_SLOW) {
    double d = c->prof.latency + c->prof.jitter * (2 * rng_unit() - 1);
    c->delay_ms = d > 0 ? (uint64_t)(d * 1000 + 0.5) : 0;
  }
  /* block_after: good for n accepts, then each one is a block (an inner
   * https side was counted by its TLS front) */
  if (c->prof.kind == K_BLOCK_AFTER)
    c->prof.kind = px->served > c->prof.n ? K_BLOCK : K_GOOD;
  if (c->prof.kind == K_BLACKHOLE) {
    c->st = S_BLACKHOLE;
    uv_read_start((uv_stream_t *)&c->cli.tcp, on_discard_alloc, on_discard_read);
    return c;
  }
  uv_tcp_nodelay(&c->cli.tcp, 1);
  c->st = S_GREETING;
  uv_read_start((uv_stream_t *)&c->cli.tcp, on_hs_alloc, on_hs_read);
  return c;
}


