-- The few POSIX file calls the frontier needs that Lua's io has not: an
-- advisory lock that dies with its process (flock), positioned writes,
-- fdatasync and ftruncate for the crawl's output file. Errors are
-- nil, "PATH: strerror".
local ffi = require("ffi")

local M = {}

-- pcall: another module in the process may have declared them already
for _, decl in ipairs({
  "int open(const char *path, int flags, ...);",
  "int close(int fd);",
  "int flock(int fd, int op);",
  "long pwrite(int fd, const void *buf, unsigned long n, long off);",
  "long pread(int fd, void *buf, unsigned long n, long off);",
  "long lseek(int fd, long off, int whence);",
  "int fdatasync(int fd);",
  "int ftruncate(int fd, long len);",
  "char *strerror(int errnum);",
  "int getpid(void);",
  "char *realpath(const char *path, char *resolved);",
  "void free(void *p);",
}) do
  pcall(ffi.cdef, decl)
end

local O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_NONBLOCK, O_CLOEXEC = 0, 1, 2, 64, 2048, 0x80000
local LOCK_EX, LOCK_NB = 2, 4
local SEEK_END = 2
local EWOULDBLOCK, ENXIO, ESPIPE = 11, 6, 29

local function fail(path)
  return nil, path .. ": " .. ffi.string(ffi.C.strerror(ffi.errno()))
end

function M.pid() return ffi.C.getpid() end

-- The absolute path with every symlink resolved, or nil when path does
-- not exist.
function M.realpath(path)
  local p = ffi.C.realpath(path, nil)
  if p == nil then return nil end
  local s = ffi.string(p)
  ffi.C.free(p)
  return s
end

-- path made absolute with its symlinks resolved; for a file that does not
-- exist yet, its directory's (to compare names that would be one file).
function M.resolve(path)
  local real = M.realpath(path)
  if real then return real end
  local dir, base = path:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", path end
  local rdir = M.realpath(dir == "" and "/" or dir)
  if not rdir then return path end
  return (rdir == "/" and "" or rdir) .. "/" .. base
end

-- When path names one of the files a SQLite database at db lives in (the
-- file, its WAL, its shared memory, its lock): that name, else nil.
function M.database_file(db, path)
  local d, p = M.resolve(db), M.resolve(path)
  for _, sfx in ipairs({ "", "-wal", "-shm", "-journal", "-lock" }) do
    if p == d .. sfx then return db .. sfx end
  end
end

-- true when path is a file that can be opened without waiting (or does
-- not exist yet); nil, err for a FIFO or a socket, whose open would wait
-- for a peer for ever (a non-blocking open and a seek tell, as no stat
-- through the FFI can portably).
function M.openable(path)
  local fd = ffi.C.open(path, O_RDONLY + O_NONBLOCK + O_CLOEXEC)
  if fd < 0 then
    local e = ffi.errno()
    if e == ENXIO then return nil, path .. ": not a regular file (a socket): refused" end
    return true -- (missing, or unreadable: the real open says why)
  end
  local pos = ffi.C.lseek(fd, 0, SEEK_END)
  local e = ffi.errno()
  ffi.C.close(fd)
  if pos < 0 and e == ESPIPE then return nil, path .. ": not a regular file (a FIFO or socket): refused" end
  return true
end

local File = {}
File.__index = File

-- Opens (creating) path for writing; the handle closes when collected.
function M.open_write(path)
  local ok, err = M.openable(path)
  if not ok then return nil, err end
  local fd = ffi.C.open(path, O_WRONLY + O_CREAT + O_CLOEXEC, ffi.cast("int", 420)) -- 0644
  if fd < 0 then return fail(path) end
  return setmetatable({ fd = fd, path = path }, File)
end

function File:size()
  local n = ffi.C.lseek(self.fd, 0, SEEK_END)
  if n < 0 then return fail(self.path) end
  return tonumber(n)
end

function File:truncate(len)
  if ffi.C.ftruncate(self.fd, len) ~= 0 then return fail(self.path) end
  return true
end

-- Writes all of s at offset off.
function File:pwrite(s, off)
  local done = 0
  while done < #s do
    local n = ffi.C.pwrite(self.fd, ffi.cast("const char *", s) + done, #s - done, off + done)
    if n < 0 then
      if ffi.errno() ~= 4 then return fail(self.path) end -- EINTR: again
    elseif n == 0 then
      return nil, self.path .. ": short write"
    else
      done = done + tonumber(n)
    end
  end
  return true
end

function File:sync()
  if ffi.C.fdatasync(self.fd) ~= 0 then return fail(self.path) end
  return true
end

-- The same on libuv's thread pool: an op id for runtime.on_op (the sync
-- runs on a dup of the descriptor: closing this file meanwhile is safe).
function File:sync_async()
  local op, err = require("scatter.core").fdatasync_async(self.fd)
  if not op then return nil, self.path .. ": " .. err end
  return op
end

function File:close()
  if self.fd >= 0 then ffi.C.close(self.fd) end
  self.fd = -1
end

File.__gc = File.close

-- An exclusive lock on path (created), held until the returned handle is
-- closed or the process ends (kill -9 included: the kernel drops it).
-- Returns handle, or nil, err, "busy" when another process holds it.
function M.lock(path)
  local fd = ffi.C.open(path, O_RDWR + O_CREAT + O_CLOEXEC, ffi.cast("int", 420))
  if fd < 0 then return fail(path) end
  if ffi.C.flock(fd, LOCK_EX + LOCK_NB) ~= 0 then
    local e = ffi.errno()
    local buf = ffi.new("char[32]")
    local n = ffi.C.pread(fd, buf, 31, 0)
    ffi.C.close(fd)
    if e == EWOULDBLOCK then
      local pid = n > 0 and ffi.string(buf, n):match("^(%d+)") or "?"
      return nil, "in use by another process (pid " .. pid .. ")", "busy"
    end
    return nil, path .. ": " .. ffi.string(ffi.C.strerror(e))
  end
  local h = setmetatable({ fd = fd, path = path }, File)
  h:truncate(0)
  h:pwrite(tostring(M.pid()) .. "\n", 0)
  return h
end

return M
