// node-postgres: a client and a pool, simple and parameterised queries. Run by
// tests/policy/capture/capture.py with the database URL as its argument.
const { Client, Pool } = require("pg");

async function main(url) {
  const client = new Client({ connectionString: url });
  await client.connect();
  await client.query("SELECT name, type, date FROM author WHERE name IN ('Ann', 'Bob')");
  await client.query("SELECT * FROM book WHERE status = $1 AND price > $2", ["draft", 1]);
  await client.query({ name: "by-type", text: "SELECT name FROM author WHERE type = $1", values: ["poet"] });
  await client.query("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", ["public"]);
  await client.end();
  const pool = new Pool({ connectionString: url, max: 1 });
  for (let i = 0; i < 2; i++) {
    const connection = await pool.connect();
    await connection.query("SELECT count(*) FROM author WHERE comment IS NOT NULL OR (format = $1)", ["hardcover"]);
    connection.release();
  }
  await pool.query("BEGIN READ ONLY");
  await pool.query("ROLLBACK");
  await pool.end();
}

main(process.argv[2]).catch((error) => {
  console.error(error);
  process.exit(1);
});
