-- Ready-made classifiers, each a constructor returning an object with
-- :classify(resp): require("scatter.classifiers").block_page{...}.
-- (They were examples loaded by dofile of a checkout path; a module
-- installs with scatter and is found by require.)
return {
  block_page = require("scatter.classifiers.block_page"),
  json_api = require("scatter.classifiers.json_api"),
  soft_error = require("scatter.classifiers.soft_error"),
}
