// An agent's reads with pgjdbc (Debian's libpostgresql-jdbc-java), for
// tests/integration/test_frameworks_jdbc.py: PreparedStatements (run often enough that
// the driver switches to a named server-side statement), a read-only transaction, and
// the DatabaseMetaData calls that SQL tools and ORMs make. Prints one "key=value" line
// per result. Usage: java -cp postgresql.jar:. JdbcReads PORT, token in AIRLOCK_TOKEN.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcReads {
    public static void main(String[] args) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", "agent");
        props.setProperty("password", System.getenv("AIRLOCK_TOKEN"));
        props.setProperty("ApplicationName", "jdbc-agent");
        // Plain TCP over loopback, which the example allows (allow_insecure_loopback).
        props.setProperty("sslmode", "disable");
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/orders";
        try (Connection conn = DriverManager.getConnection(url, props)) {
            List<String> found = new ArrayList<>();
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT name FROM products WHERE type = ? AND price < ? ORDER BY id")) {
                // pgjdbc's prepareThreshold is 5: from the fifth run on it uses a named
                // server-side statement.
                for (int run = 0; run < 7; run++) {
                    ps.setString(1, "fruit");
                    ps.setBigDecimal(2, new java.math.BigDecimal("1.40"));
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            found.add(rs.getString(1));
                        }
                    }
                }
            }
            print("prepared", String.join(",", found));
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT count(*) FROM orders o JOIN products p ON p.id = o.product_id"
                    + " WHERE p.name IN (?, ?) AND o.placed_at > ?::timestamptz")) {
                ps.setString(1, "apple");
                ps.setString(2, "pear");
                ps.setString(3, "2024-03-01 12:00+00");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    print("in", rs.getString(1));
                }
            }
            conn.setAutoCommit(false);
            conn.setReadOnly(true);
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery("SELECT sum(quantity) FROM orders")) {
                rs.next();
                print("transaction", rs.getString(1));
            }
            conn.commit();
            conn.setReadOnly(false);
            conn.setAutoCommit(true);

            DatabaseMetaData meta = conn.getMetaData();
            print("product", meta.getDatabaseProductName() + " " + meta.getDatabaseMajorVersion());
            print("tables", column(meta.getTables(null, "public", "%", new String[] {"TABLE"}), "TABLE_NAME"));
            print("views", column(meta.getTables(null, "public", "%", new String[] {"VIEW"}), "TABLE_NAME"));
            print("columns", column(meta.getColumns(null, "public", "products", "%"), "COLUMN_NAME"));
            print("primary key", column(meta.getPrimaryKeys(null, "public", "orders"), "COLUMN_NAME"));
            print("imported keys", column(meta.getImportedKeys(null, "public", "orders"), "PKTABLE_NAME"));
            print("exported keys", column(meta.getExportedKeys(null, "public", "products"), "FKTABLE_NAME"));
            print("indexes", column(meta.getIndexInfo(null, "public", "products", false, false), "INDEX_NAME"));
            print("schemas", column(meta.getSchemas(), "TABLE_SCHEM"));
            print("types", String.valueOf(count(meta.getTypeInfo()) > 0));
            print("procedures", String.valueOf(count(meta.getFunctions(null, "public", "%"))));
        }
    }

    static void print(String key, String value) {
        System.out.println(key + "=" + value);
    }

    static String column(ResultSet rs, String name) throws SQLException {
        List<String> values = new ArrayList<>();
        try (rs) {
            while (rs.next()) {
                values.add(rs.getString(name));
            }
        }
        return String.join(",", values);
    }

    static int count(ResultSet rs) throws SQLException {
        int rows = 0;
        try (rs) {
            while (rs.next()) {
                rows++;
            }
        }
        return rows;
    }
}
