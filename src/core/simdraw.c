/* The simulator's outcome model: what an attempt through a simulated
 * proxy does. See sim_int.h. */
#include "sim_int.h"

static double jittered(sc_sim_t *sim, const sc_sim_group_t *g) {
  double lat = g->latency;
  if (g->jitter > 0) lat += g->jitter * (2.0 * sc_sim_unif(sim) - 1.0);
  return lat < 0 ? 0 : lat;
}

static sc_verdict_t script_verdict(char c) {
  switch (c) {
  case 's': return SC_V_SUCCESS;
  case 'f': return SC_V_FINAL;
  case 'e': return SC_V_TARGET_ERROR;
  case 't': return SC_V_TRANSPORT;
  default: return SC_V_PROXY_BLOCKED; /* 'b'; add_group checked the rest */
  }
}

/* The connect + proxy handshake takes this share of an answering proxy's
 * latency (a SOCKS handshake is two of the three round trips of a small
 * request); a blackhole never finishes it. */
#define HANDSHAKE_SHARE 0.5

sc_verdict_t sc_sim_draw(sc_sim_t *sim, sproxy *px, double ct, double *latency,
                         double *handshake, int *rest) {
  const sgroup *sg = &sim->groups[px->group];
  const sc_sim_group_t *g = &sg->g;
  sc_verdict_t v;
  double lat;
  switch (g->profile) {
  case SC_SIM_GOOD:
  case SC_SIM_SLOW:
    lat = jittered(sim, g);
    if (g->target_error > 0 && sc_sim_unif(sim) < g->target_error)
      v = SC_V_TARGET_ERROR;
    else
      v = sc_sim_unif(sim) < g->success ? SC_V_SUCCESS : SC_V_PROXY_BLOCKED;
    break;
  case SC_SIM_DEAD:
    lat = g->latency;
    v = SC_V_TRANSPORT;
    break;
  case SC_SIM_BLACKHOLE:
    lat = ct > 0 ? ct : sim->cfg.proxy_timeout;
    v = SC_V_TRANSPORT;
    break;
  case SC_SIM_BLOCK:
    lat = jittered(sim, g);
    v = SC_V_PROXY_BLOCKED;
    break;
  default: /* SC_SIM_SCRIPT */
    lat = jittered(sim, g);
    *rest = g->script[px->script_pos % sg->script_len] == 'r';
    v = script_verdict(g->script[px->script_pos++ % sg->script_len]);
    break;
  }
  double hs = -1;
  if (g->profile != SC_SIM_DEAD && g->profile != SC_SIM_BLACKHOLE) {
    hs = HANDSHAKE_SHARE * lat;
    if (ct > 0 && hs > ct) { /* the connect deadline cuts it */
      lat = ct;
      hs = -1;
      v = SC_V_TRANSPORT;
      *rest = 0;
    }
  }
  if (lat >= sim->cfg.proxy_timeout) { /* the transport gives up first */
    lat = sim->cfg.proxy_timeout;
    v = SC_V_TRANSPORT;
    if (hs >= lat) hs = -1;
    *rest = 0;
  }
  *latency = lat;
  *handshake = hs;
  return v;
}
