// An agent's everyday reads with node-postgres, for tests/integration/test_frameworks_node.py:
// a Client's plain, parameterized and named (prepared) queries and a transaction, then a
// pg.Pool of one connection checked out and released in turn. Prints one JSON object.
// Usage: node pg_reads.js PORT CA_FILE, with the token in AIRLOCK_TOKEN.
"use strict";
const fs = require("fs");
const { Client, Pool } = require("pg");

async function main() {
  const [port, caFile] = process.argv.slice(2);
  const options = {
    host: "127.0.0.1",
    port: Number(port),
    user: "agent",
    password: process.env.AIRLOCK_TOKEN,
    database: "orders",
    ssl: { ca: fs.readFileSync(caFile) },
    application_name: "node-agent",
  };
  const out = {};
  const client = new Client(options);
  await client.connect();
  try {
    out.plain = (await client.query("SELECT name FROM products WHERE name IN ('apple', 'pear') ORDER BY name")).rows;
    out.params = (
      await client.query(
        "SELECT id, type FROM products WHERE type = $1 AND (price < $2 OR date > $3::date) ORDER BY id",
        ["fruit", 1.3, "2024-01-02"],
      )
    ).rows;
    const named = { name: "by-status", text: "SELECT count(*)::int AS n FROM orders WHERE status = $1", values: ["pending"] };
    out.named = [(await client.query(named)).rows[0].n, (await client.query({ ...named, values: ["shipped"] })).rows[0].n];
    await client.query("BEGIN");
    out.inTransaction = (await client.query("SELECT sum(quantity)::int AS q FROM orders")).rows[0].q;
    await client.query("COMMIT");
    out.rowMode = (await client.query({ text: "SELECT 1 AS a, 'two' AS b", rowMode: "array" })).rows;
  } finally {
    await client.end();
  }
  const pool = new Pool({ ...options, max: 1, idleTimeoutMillis: 0 });
  const pids = [];
  try {
    for (let round = 0; round < 3; round++) {
      const checkedOut = await pool.connect();
      try {
        pids.push((await checkedOut.query("SELECT pg_backend_pid() AS pid")).rows[0].pid);
        await checkedOut.query("SELECT $1::text AS round", [String(round)]);
      } finally {
        checkedOut.release();
      }
    }
    out.poolQuery = (await pool.query("SELECT count(*)::int AS n FROM products")).rows[0].n;
    out.poolConnections = new Set(pids).size;
    out.poolIdle = pool.idleCount;
  } finally {
    await pool.end();
  }
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
