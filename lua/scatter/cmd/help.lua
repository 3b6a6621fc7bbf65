return {
  summary = "list the commands (help COMMAND: describe one)",
  usage = "usage: scatter help [COMMAND]\n",
  run = function(args)
    local cli = require("scatter.cli")
    local name = args and args[1]
    if name then
      for _, n in ipairs(cli.COMMANDS) do
        if n == name then
          io.stdout:write(require("scatter.cmd." .. n).usage)
          return 0
        end
      end
      return cli.usage_error("help: unknown command '" .. name .. "'")
    end
    io.stdout:write(cli.usage())
    return 0
  end,
}
