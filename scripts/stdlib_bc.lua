-- scripts/stdlib_bc.lua STDLIB BC: compile every module under STDLIB (the
-- build tree's stdlib link) to bytecode under BC, keeping the debug
-- information and naming each chunk after its source, so that a traceback
-- reads as if the source had been loaded.  Run by the build with the pdlua
-- just built (the bytecode is that VM's); lua/paths.c loads these files
-- when they are at least as new as their sources.
local stdlib, bc = arg[1], arg[2]
assert(stdlib and bc, "usage: pdlua scripts/stdlib_bc.lua STDLIB BC")
local p = assert(io.popen("cd '" .. stdlib .. "' && find . -name '*.lua' | sort"))
local n, made = 0, {}
for rel in p:lines() do
  rel = rel:gsub("^%./", "")
  local src = stdlib .. "/" .. rel
  local f = assert(loadfile(src))            -- chunk name "@" .. src, as require gives
  local out = bc .. "/" .. rel:gsub("%.lua$", ".luac")
  local dir = out:match("^(.*)/[^/]*$")
  if not made[dir] then made[dir] = os.execute("mkdir -p '" .. dir .. "'") end
  local tmp = out .. ".tmp"
  local o = assert(io.open(tmp, "wb"))
  o:write(string.dump(f))
  o:close()
  assert(os.rename(tmp, out))
  n = n + 1
end
p:close()
print(string.format("stdlib_bc: %d modules compiled into %s", n, bc))
