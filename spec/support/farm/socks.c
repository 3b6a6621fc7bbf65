/* SOCKS5 (RFC 1928, RFC 1929 credentials) and SOCKS4/4a: the handshake,
 * the destination, and the protocol's replies. */
#include "farm.h"

#include <stdlib.h>
#include <string.h>

/* A SOCKS5 reply with a zero IPv4 bind address. */
static void send_rep(conn_t *c, unsigned char rep) {
  unsigned char r[10] = { 5, rep, 0, 1, 0, 0, 0, 0, 0, 0 };
  cli_send(c, r, sizeof r);
}

static void send_success(conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  unsigned char r[22] = { 5, 0, 0, 1 };
  size_t n = 10;
  memset(&ss, 0, sizeof ss);
  uv_tcp_getsockname(&c->tgt.tcp, (struct sockaddr *)&ss, &len);
  if (ss.ss_family == AF_INET6) {
    r[3] = 4;
    memcpy(r + 4, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    n = 22;
  } else {
    memcpy(r + 4, &((struct sockaddr_in *)&ss)->sin_addr, 4);
  }
  r[n - 2] = (unsigned char)(get_port(&ss) >> 8);
  r[n - 1] = (unsigned char)(get_port(&ss) & 0xff);
  cli_send(c, r, n);
}


static unsigned char rep_for(int err) {
  switch (err) {
  case UV_ECONNREFUSED: return 0x05;
  case UV_ENETUNREACH: return 0x03;
  case UV_EHOSTUNREACH: return 0x04;
  case UV_ETIMEDOUT: return 0x06;
  case UV_EAFNOSUPPORT: return 0x08;
  default: return 0x01;
  }
}


void socks5_reply(conn_t *c, int err) {
  if (err == 0 && c->tgt.open) send_success(c);
  else if (err == 0) send_rep(c, 0x00); /* block: no upstream to describe */
  else send_rep(c, err == 1 ? 0x05 : rep_for(err));
}

static void handle_request(conn_t *c) {
  const unsigned char *p = c->hs + c->hs_off;
  size_t alen;
  /* Describe the destination for the log before anything else. */
  if (c->atyp == 1) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&c->dst;
    memset(&c->dst, 0, sizeof c->dst);
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, p + 4, 4);
    uv_ip4_name(sin, c->host, sizeof c->host);
    alen = 4;
  } else if (c->atyp == 4) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c->dst;
    memset(&c->dst, 0, sizeof c->dst);
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, p + 4, 16);
    uv_ip6_name(sin6, c->host, sizeof c->host);
    alen = 16;
  } else {
    alen = 1 + (size_t)p[4];
    memcpy(c->host, p + 5, p[4]);
    c->host[p[4]] = '\0';
  }
  c->dport = (p[4 + alen] << 8) | p[5 + alen];
  c->hs_off += 6 + alen;

  int resolved = c->atyp != 3 || map_lookup(c->host, &c->dst) == 0;
  /* The log is one space-separated line: keep odd names on it. */
  for (char *h = c->host; *h; h++)
    if (*h <= ' ' || *h > '~') *h = '?';
  if (c->host[0] == '\0') strcpy(c->host, "-");
  if (c->cmd != 1) {
    log_request(c, "unsupported");
    send_rep(c, 0x07);
    conn_drain(c);
    return;
  }
  if (!resolved) {
    log_request(c, "unresolved");
    send_rep(c, 0x04);
    conn_drain(c);
    return;
  }
  set_port(&c->dst, c->dport);
  c->tunnel = 1;
  conn_serve(c);
}

static void reject_methods(conn_t *c) {
  static const unsigned char no[2] = { 5, 0xff };
  cli_send(c, no, 2);
  conn_drain(c);
}

/* Consumes as many complete handshake messages as hs holds; clients may
 * pipeline them. */
void socks5_process(conn_t *c) {
  for (;;) {
    const unsigned char *p = c->hs + c->hs_off;
    size_t n = c->hs_len - c->hs_off, need;
    switch (c->st) {
    case S_GREETING: {
      if (n >= 1 && p[0] != 5) {
        if (c->prof.kind == K_HANDSHAKE_FAIL) reject_methods(c);
        else conn_close(c, 0); /* not SOCKS5 at all */
        return;
      }
      if (n < 2 || n < (need = 2 + (size_t)p[1])) return;
      c->hs_off += need;
      unsigned char want = c->prof.auth ? 2 : 0;
      if (c->prof.kind == K_HANDSHAKE_FAIL || memchr(p + 2, want, p[1]) == NULL) {
        reject_methods(c);
        return;
      }
      unsigned char ok[2] = { 5, want };
      cli_send(c, ok, 2);
      c->st = c->prof.auth ? S_AUTH : S_REQUEST;
      break;
    }
    case S_AUTH: {
      /* RFC 1929: VER ULEN UNAME PLEN PASSWD */
      if (n < 2 || n < 3 + (size_t)p[1]) return;
      size_t ulen = p[1], plen = p[2 + ulen];
      if (n < (need = 3 + ulen + plen)) return;
      c->hs_off += need;
      int ok = p[0] == 1 && ulen == strlen(c->prof.user) &&
               plen == strlen(c->prof.pass) &&
               memcmp(p + 2, c->prof.user, ulen) == 0 &&
               memcmp(p + 3 + ulen, c->prof.pass, plen) == 0;
      unsigned char r[2] = { 1, ok ? 0 : 1 };
      cli_send(c, r, 2);
      if (!ok) { conn_drain(c); return; }
      c->st = S_REQUEST;
      break;
    }
    case S_REQUEST: {
      /* VER CMD RSV ATYP ADDR PORT */
      if (n < 5) return;
      if (p[0] != 5) { conn_close(c, 0); return; }
      c->cmd = p[1];
      c->atyp = p[3];
      size_t alen = p[3] == 1 ? 4 : p[3] == 4 ? 16 : p[3] == 3 ? 1 + (size_t)p[4] : 0;
      if (alen == 0) { send_rep(c, 0x08); conn_drain(c); return; }
      if (n < 6 + alen) return;
      handle_request(c);
      return;
    }
    default:
      return;
    }
    if (c->closing) return;
  }
}

/* ---------------------------------------------------------------- SOCKS4 */

/* VN=0, CD, then the port and address (ignored by clients). */
static void socks4_send(conn_t *c, unsigned char cd) {
  unsigned char r[8] = { 0, cd, 0, 0, 0, 0, 0, 0 };
  cli_send(c, r, sizeof r);
}

void socks4_reply(conn_t *c, int err) {
  socks4_send(c, err == 0 ? 0x5A : 0x5B);
}

/* VN=4 CD DSTPORT DSTIP USERID\0, and for 4a (DSTIP 0.0.0.x, x != 0)
 * HOSTNAME\0. The user id is the only credential SOCKS4 has: with user=
 * it must match (93: "the user-ids differ"). */
void socks4_process(conn_t *c) {
  const unsigned char *p = c->hs;
  size_t n = c->hs_len;
  if (n >= 1 && p[0] != 4) {
    if (c->prof.kind == K_HANDSHAKE_FAIL) {
      static const unsigned char junk[8] = { 5, 0xff, 0, 0, 0, 0, 0, 0 };
      cli_send(c, junk, sizeof junk);
      conn_drain(c);
    } else {
      conn_close(c, 0); /* not SOCKS4 at all */
    }
    return;
  }
  if (n < 9) return;
  const unsigned char *uid = p + 8, *nul = memchr(uid, 0, n - 8);
  if (!nul) return;
  size_t used = (size_t)(nul - p) + 1;
  int is4a = p[4] == 0 && p[5] == 0 && p[6] == 0 && p[7] != 0;
  const unsigned char *name = nul + 1, *name_end = NULL;
  if (is4a) {
    name_end = memchr(name, 0, n - used);
    if (!name_end) return;
    used = (size_t)(name_end - p) + 1;
  }
  c->hs_off = used;
  c->cmd = p[1];
  c->dport = (p[2] << 8) | p[3];
  if (c->prof.kind == K_HANDSHAKE_FAIL) {
    /* a reply of the wrong version */
    static const unsigned char junk[8] = { 5, 0x5A, 0, 0, 0, 0, 0, 0 };
    cli_send(c, junk, sizeof junk);
    conn_drain(c);
    return;
  }
  int resolved = 1;
  if (is4a) {
    size_t hl = (size_t)(name_end - name);
    c->atyp = 3;
    if (hl >= sizeof c->host) hl = sizeof c->host - 1;
    memcpy(c->host, name, hl);
    c->host[hl] = '\0';
    resolved = map_lookup(c->host, &c->dst) == 0;
  } else {
    struct sockaddr_in *sin = (struct sockaddr_in *)&c->dst;
    memset(&c->dst, 0, sizeof c->dst);
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, p + 4, 4);
    uv_ip4_name(sin, c->host, sizeof c->host);
    c->atyp = 1;
  }
  for (char *h = c->host; *h; h++)
    if (*h <= ' ' || *h > '~') *h = '?';
  if (c->host[0] == '\0') strcpy(c->host, "-");
  if (c->prof.auth && strcmp((const char *)uid, c->prof.user) != 0) {
    log_request(c, "auth_failed");
    socks4_send(c, 0x5D);
    conn_drain(c);
    return;
  }
  if (c->cmd != 1 || !resolved) {
    log_request(c, c->cmd != 1 ? "unsupported" : "unresolved");
    socks4_send(c, 0x5B);
    conn_drain(c);
    return;
  }
  set_port(&c->dst, c->dport);
  c->tunnel = 1;
  conn_serve(c);
}
