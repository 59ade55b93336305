"""MySQL/MariaDB client/server protocol, sans-I/O.

https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html
https://mariadb.com/docs/server/reference/clientserver-protocol
"""
