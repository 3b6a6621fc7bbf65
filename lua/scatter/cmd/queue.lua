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
commit). export refuses FILE when it is one of the queue's own files, and
removes a FILE it made when the export fails. A Redis name nothing was
ever pushed to is an error, as a missing queue file is. Exit code 0, 1
when the queue cannot be opened or written or the output cannot be
written (standard output included), 2 on a bad command line.

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

-- A raised error's text without the file:line a Lua error() adds.
local function bare(err) return (tostring(err):gsub("^[^\n:]-%.lua:%d+: ", "")) end

local function open(target, name, write)
  local opts = { readonly = not write }
  if target:match("^rediss?://") then
    if name == nil then return nil, "a Redis queue needs --name NAME" end
    opts.redis, opts.name = target, name
  else
    local fileio = require("scatter.fileio")
    if not fileio.realpath(target) then return nil, target .. ": no such queue file" end
    -- (a directory, a FIFO, someone else's file: the backend says which;
    -- an empty file it would take as a new queue, which retry must not)
    local f = fileio.openable(target) and io.open(target, "rb")
    if f then
      local head, rerr = f:read(1)
      f:close()
      if not head and not rerr then return nil, target .. ": an empty file, not a scatter queue" end
    end
    opts.path = target
  end
  local q, err = require("scatter.queue").new(opts)
  if not q then return nil, err end
  if opts.redis then
    -- a name nothing was ever pushed to is a typo (or the wrong database),
    -- not an empty queue: said, as a missing queue file is
    local sok, s = pcall(q.stats, q)
    if not sok or (s.seen == 0 and s.failed == 0) then
      pcall(q.close, q)
      if not sok then return nil, bare(s) end
      return nil, ("%s: no queue named '%s' there (nothing was ever pushed to it)"):format(q.b.c.url or target, name)
    end
  end
  return q
end

-- Writes to standard output that fail (a full disk, a closed pipe) are
-- errors, not a success with nothing written.
local function out(...)
  local ok, err = io.stdout:write(...)
  if not ok then error("standard output: " .. tostring(err), 0) end
end

local function run_action(q, action, opts, pos)
  local cjson = require("cjson")
  if action == "stats" then
    local s = q:stats()
    if opts.json then
      out(cjson.encode(s), "\n")
    else
      for _, k in ipairs({ "queued", "leased", "done", "failed", "seen" }) do
        out(string.format("%-7s %d\n", k, s[k]))
      end
    end
  elseif action == "failed" then
    for it in q:failed() do
      if opts.json then
        local rec = require("scatter.queue_text").exportable({ url = it.url, method = it.method, tries = it.tries,
          err = it.err, key = it.key, meta = it.meta })
        out(assert(require("scatter.json").encode(rec)), "\n")
      else
        out(string.format("%d\t%s\t%s\n", it.tries, it.url, tostring(it.err)))
      end
    end
  elseif action == "retry" then
    out(string.format("%d failed items queued again\n", q:retry_failed()))
  else
    local file = pos[3]
    local fh = io.stdout
    local existed
    if file ~= "-" then
      local fileio = require("scatter.fileio")
      existed = fileio.realpath(file) ~= nil
      -- (an export over the queue's own files would destroy what it reads)
      if not q.opts.redis and fileio.database_file(q.opts.path, file) then
        error(file .. ": that is the queue's own file; export to another", 0)
      end
      local ferr
      local ok, oerr = fileio.openable(file)
      if not ok then error(oerr, 0) end
      fh, ferr = io.open(file, "wb")
      if not fh then error(ferr, 0) end
    end
    local ok, n = pcall(q.export, q, fh)
    if fh ~= io.stdout then
      local cok, cerr = fh:close()
      if ok and not cok then ok, n = false, "export: write: " .. tostring(cerr) end
      -- a failed export leaves no half file it made
      if not ok and not existed then os.remove(file) end
    end
    if not ok then
      local msg = bare(n):gsub("^queue:export: ", "")
      local werr = msg:match("^export: write: (.*)$")
      error(werr and ((file == "-" and "standard output" or file) .. ": " .. werr) or msg, 0)
    end
    if fh == io.stdout then
      local fok, ferr = io.stdout:flush()
      if not fok then error("standard output: " .. tostring(ferr), 0) end
    end
    io.stderr:write(string.format("scatter queue: exported %d items\n", n))
  end
  local fok, ferr = io.stdout:flush()
  if not fok then error("standard output: " .. tostring(ferr), 0) end
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
  local ok, perr = pcall(run_action, q, action, opts, pos)
  local cok, cerr = pcall(q.close, q)
  if not ok then return fail(bare(perr)) end
  if not cok then return fail(bare(cerr)) end
  return 0
end

return C
