-- scatter queue stats|failed|retry|export QUEUE: a crawl frontier from the
-- shell (DESIGN.md section 8). QUEUE is a queue file or a Redis URL.
local cli = require("scatter.cli")
local getopt = require("scatter.getopt")

local C = {
  summary = "show, list, requeue or export a crawl queue",
  usage = [[
usage: scatter queue stats QUEUE [--json]
       scatter queue failed QUEUE [--json]
       scatter queue retry QUEUE
       scatter queue export QUEUE FILE

QUEUE is a queue file (scatter.queue{ path = FILE }) or a Redis URL with
--name (scatter.queue{ redis = URL, name = NAME }).
  stats    counts of queued, leased, done and failed items, and keys seen
  failed   the failed items with their tries and last error
  retry    queues the failed items again (tries reset); the queue must not
           be in use by a running crawl
  export   writes every item (Redis: the crawl's output) as JSON lines to
           FILE ("-": standard output)
stats, failed and export read beside a running crawl (as of its last
commit). Exit code 0, 1 when the queue cannot be opened or written, 2 on a
bad command line.

options:
  --json               stats as one JSON object, failed as JSON lines
  --name NAME          the queue's name in Redis
]],
}

local SPEC = { ["--json"] = "flag", ["--name"] = "value" }
local ACTIONS = { stats = 1, failed = 1, retry = 1, export = 2 }

local function fail(msg)
  io.stderr:write("scatter queue: ", msg, "\n")
  return 1
end

local function open(target, name, write)
  local opts = { readonly = not write }
  if target:match("^rediss?://") then
    opts.redis, opts.name = target, name
  else
    local f = io.open(target, "rb")
    if not f then return nil, target .. ": no such queue file" end
    f:close()
    opts.path = target
  end
  return require("scatter.queue").new(opts)
end

function C.run(args)
  local opts, pos = getopt.parse(args, SPEC)
  if not opts then return cli.usage_error("queue: " .. pos, C) end
  if opts.help then
    io.stdout:write(C.usage)
    return 0
  end
  local action = pos[1]
  if not action then return cli.usage_error("queue: give an action: stats, failed, retry or export", C) end
  local nargs = ACTIONS[action]
  if not nargs then return cli.usage_error("queue: unknown action '" .. action .. "'", C) end
  if #pos ~= 1 + nargs then
    return cli.usage_error("queue " .. action .. ": give " .. (nargs == 2 and "QUEUE and FILE" or "one QUEUE"), C)
  end
  local q, err = open(pos[2], opts.name, action == "retry")
  if not q then return fail(err) end
  local cjson = require("cjson")
  local ok, perr = pcall(function()
    if action == "stats" then
      local s = q:stats()
      if opts.json then
        io.stdout:write(cjson.encode(s), "\n")
      else
        for _, k in ipairs({ "queued", "leased", "done", "failed", "seen" }) do
          io.stdout:write(string.format("%-7s %d\n", k, s[k]))
        end
      end
    elseif action == "failed" then
      for it in q:failed() do
        if opts.json then
          io.stdout:write(cjson.encode({ url = it.url, method = it.method, tries = it.tries, err = it.err,
            key = it.key, meta = it.meta }), "\n")
        else
          io.stdout:write(string.format("%d\t%s\t%s\n", it.tries, it.url, tostring(it.err)))
        end
      end
    elseif action == "retry" then
      io.stdout:write(string.format("%d failed items queued again\n", q:retry_failed()))
    else
      local file = pos[3]
      local fh = io.stdout
      if file ~= "-" then
        local ferr
        fh, ferr = io.open(file, "wb")
        if not fh then error(ferr, 0) end
      end
      local n = q:export(fh)
      if fh ~= io.stdout then
        local cok, cerr = fh:close()
        if not cok then error(file .. ": " .. tostring(cerr), 0) end
      end
      io.stderr:write(string.format("scatter queue: exported %d items\n", n))
    end
  end)
  q:close()
  if not ok then return fail(tostring(perr)) end
  return 0
end

return C
