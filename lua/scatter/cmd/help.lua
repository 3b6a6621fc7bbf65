return {
  summary = "list the commands",
  usage = "usage: scatter help\n",
  run = function()
    io.stdout:write(require("scatter.cli").usage())
    return 0
  end,
}
