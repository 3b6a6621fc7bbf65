-- Moved into the module: require("scatter.classifiers").json_api
return require("scatter.classifiers").json_api
