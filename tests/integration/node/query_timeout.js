// An agent as agent frameworks run one: a node-postgres pool with a query_timeout,
// closed when the query times out. Usage: node query_timeout.js PORT CA_FILE SQL,
// with the token in AIRLOCK_TOKEN.
"use strict";
const fs = require("fs");
const { Pool } = require("pg");

async function main() {
  const [port, caFile, sql] = process.argv.slice(2);
  const pool = new Pool({
    host: "127.0.0.1",
    port: Number(port),
    user: "agent",
    password: process.env.AIRLOCK_TOKEN,
    database: "orders",
    ssl: { ca: fs.readFileSync(caFile) },
    query_timeout: 3000,
    max: 1,
  });
  try {
    await pool.query(sql);
    console.log("ran");
  } catch (error) {
    console.log(`gave up: ${error.message}`);
  }
  await pool.end();
  console.log("pool closed");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
