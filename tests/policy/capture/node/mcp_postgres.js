// The MCP reference PostgreSQL server (@modelcontextprotocol/server-postgres), driven over
// stdio as an MCP client does: initialize, list resources, read a table's schema, call the
// query tool. Run by tests/policy/capture/capture.py with the database URL as argument.
const { spawn } = require("child_process");
const path = require("path");

const server = spawn(
  process.execPath,
  [path.join(__dirname, "node_modules", "@modelcontextprotocol", "server-postgres", "dist", "index.js"), process.argv[2]],
  { stdio: ["pipe", "pipe", "inherit"] },
);
let buffered = "";
const waiting = new Map();
server.stdout.on("data", (chunk) => {
  buffered += chunk;
  let newline;
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, newline);
    buffered = buffered.slice(newline + 1);
    if (!line.trim()) continue;
    const message = JSON.parse(line);
    if (message.id !== undefined && waiting.has(message.id)) {
      waiting.get(message.id)(message);
      waiting.delete(message.id);
    }
  }
});
let nextId = 1;
function request(method, params) {
  const id = nextId++;
  server.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
  return new Promise((resolve) => waiting.set(id, resolve));
}

async function main() {
  await request("initialize", {
    protocolVersion: "2024-11-05",
    capabilities: {},
    clientInfo: { name: "airlock-capture", version: "1" },
  });
  server.stdin.write(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) + "\n");
  const listed = await request("resources/list", {});
  for (const resource of listed.result.resources) {
    await request("resources/read", { uri: resource.uri });
  }
  await request("tools/list", {});
  const answer = await request("tools/call", {
    name: "query",
    arguments: { sql: "SELECT name FROM author WHERE name IN ('apple', 'pear')" },
  });
  if (answer.error || answer.result.isError) throw new Error(JSON.stringify(answer));
  server.kill();
}

main().catch((error) => {
  console.error(error);
  server.kill();
  process.exit(1);
});
