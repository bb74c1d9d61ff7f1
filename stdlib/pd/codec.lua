--- pd.codec: Lua values <-> bytes (docs/wire.md), and code transport.
--
-- encode/decode are the native codec (lua/codec.c).  The rest of this file
-- is code transport: bundles of the job script and its local pure-Lua
-- modules, shipped as source, named by SHA-256, sent once per receiver.
local native = require "pd.core.codec"

local M = {
  version = native.version,
  encode = native.encode,
  decode = native.decode,
  fingerprint = native.fingerprint,
}

return M
