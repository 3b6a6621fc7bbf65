std = "luajit"
max_line_length = 140
exclude_files = { "build*/**", "build.luarocks/**", "bench/node_modules/**" }
files["spec/**/*.lua"] = { std = "+busted" }
files["bench/**/*.lua"] = { globals = { "arg" } }
files["examples/**/*.lua"] = { globals = { "arg" } }
