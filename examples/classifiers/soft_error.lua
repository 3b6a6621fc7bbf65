-- Moved into the module: require("scatter.classifiers").soft_error
return require("scatter.classifiers").soft_error
