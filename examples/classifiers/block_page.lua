-- Moved into the module: require("scatter.classifiers").block_page
return require("scatter.classifiers").block_page
