// The Crawlee 3 contender of bench/faultmix.lua: an HttpCrawler with its
// default retries (maxRequestRetries 3, sessions retired on 401/403/429),
// through a local proxy-chain HTTP proxy that forwards each request to one of
// the SOCKS5 proxies (Crawlee's default got-scraping client rejects socks5
// URLs). The SOCKS proxy is chosen by the HTTP proxy's user name (pN), and
// Crawlee rotates the proxy URLs itself.
//
//   node bench/crawlee_run.cjs CONFIG_JSON
// CONFIG_JSON: {urls: [...], proxies: ["127.0.0.1:P", ...], concurrency,
//               timeout (seconds, one attempt), marker (string the body must hold),
//               serve (optional): "http://127.0.0.1:P" of a `scatter serve` to
//               use as Crawlee's one proxy instead of the proxy-chain bridge}
// Prints one JSON line: {ok, failed, wall, latencies: [...], attempts}.
'use strict';
const path = require('path');
const fs = require('fs');
const os = require('os');
const { createRequire } = require('module');

const peers = createRequire(path.join(__dirname, 'peers', 'package.json'));
const { HttpCrawler, Configuration, ProxyConfiguration, log } = peers('crawlee');
const ProxyChain = peers('proxy-chain');

async function main() {
  const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  log.setLevel(log.LEVELS.OFF);
  let bridge = null;
  let proxyUrls;
  if (cfg.serve) {
    proxyUrls = [cfg.serve]; // Crawlee's own HTTP proxy support, no bridge
  } else {
    bridge = new ProxyChain.Server({
      port: 0,
      host: '127.0.0.1',
      verbose: false,
      prepareRequestFunction: ({ username }) => {
        const i = Number(String(username).slice(1));
        return { upstreamProxyUrl: `socks5://${cfg.proxies[i]}` };
      },
    });
    // proxy-chain logs every failed upstream connection; the farm makes many
    bridge.on('requestFailed', () => {});
    bridge.on('connectionClosed', () => {});
    await bridge.listen();
    const port = bridge.server.address().port;
    proxyUrls = cfg.proxies.map((_, i) => `http://p${i}:x@127.0.0.1:${port}`);
  }

  const storage = fs.mkdtempSync(path.join(os.tmpdir(), 'crawlee-bench-'));
  process.env.CRAWLEE_STORAGE_DIR = storage;
  const config = new Configuration({ persistStorage: false, purgeOnStart: true, storageClientOptions: { localDataDirectory: storage } });

  const first = new Map(); // uniqueKey -> first attempt's start time
  const latencies = [];
  let attempts = 0;
  let ok = 0;
  const crawler = new HttpCrawler({
    proxyConfiguration: new ProxyConfiguration({ proxyUrls }),
    maxConcurrency: cfg.concurrency,
    minConcurrency: cfg.concurrency,
    navigationTimeoutSecs: cfg.timeout,
    requestHandlerTimeoutSecs: cfg.timeout,
    preNavigationHooks: [(ctx) => {
      attempts++;
      if (!first.has(ctx.request.uniqueKey)) first.set(ctx.request.uniqueKey, performance.now());
    }],
    requestHandler: async ({ request, body }) => {
      // the same check scatter's classifier makes: a tampered or cut body
      // is a failed attempt (Crawlee retries it)
      if (!String(body).includes(cfg.marker)) throw new Error('bad body');
      ok++;
      latencies.push((performance.now() - first.get(request.uniqueKey)) / 1000);
    },
    failedRequestHandler: () => {},
  }, config);

  const t0 = performance.now();
  await crawler.run(cfg.urls);
  const wall = (performance.now() - t0) / 1000;
  if (bridge) await bridge.close(true);
  fs.rmSync(storage, { recursive: true, force: true });
  process.stdout.write(JSON.stringify({ ok, failed: cfg.urls.length - ok, wall, latencies, attempts }) + '\n');
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
