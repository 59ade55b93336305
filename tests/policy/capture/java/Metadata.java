// pgjdbc's DatabaseMetaData, as JDBC tools (DBeaver, DataGrip, Metabase, ...) call it on
// connect and when they browse a schema. Run by tests/policy/capture/capture.py.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;

public class Metadata {
    static void drain(ResultSet rows) throws Exception {
        while (rows.next()) {
        }
        rows.close();
    }

    public static void main(String[] args) throws Exception {
        try (Connection connection = DriverManager.getConnection(args[0])) {
            DatabaseMetaData meta = connection.getMetaData();
            meta.getDatabaseProductVersion();
            drain(meta.getCatalogs());
            drain(meta.getSchemas());
            drain(meta.getTableTypes());
            drain(meta.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"}));
            drain(meta.getColumns(null, "public", "author", "%"));
            drain(meta.getPrimaryKeys(null, "public", "book"));
            drain(meta.getImportedKeys(null, "public", "book"));
            drain(meta.getExportedKeys(null, "public", "author"));
            drain(meta.getIndexInfo(null, "public", "book", false, true));
            drain(meta.getProcedures(null, "public", "%"));
            drain(meta.getFunctions(null, "public", "%"));
            drain(meta.getTypeInfo());
            drain(meta.getUDTs(null, "public", "%", null));
            drain(meta.getTablePrivileges(null, "public", "author"));
            connection.setAutoCommit(false);
            try (PreparedStatement statement = connection.prepareStatement(
                    "SELECT name FROM author WHERE name IN (?, ?) AND type = ?")) {
                statement.setString(1, "Ann");
                statement.setString(2, "Bob");
                statement.setString(3, "poet");
                drain(statement.executeQuery());
            }
            connection.rollback();
        }
    }
}
