return {
  summary = "print versions",
  usage = "usage: scatter version\n",
  run = function()
    local scatter = require("scatter")
    local v = scatter.versions()
    io.stdout:write(string.format("scatter %s\n%s\nlibuv %s\n%s\n", scatter._VERSION,
      jit and jit.version or _VERSION, v.uv, v.curl))
    return 0
  end,
}
