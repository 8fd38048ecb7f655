//! The MariaDB servers the database tests run against: started by the harness from the Debian
//! package, with the binlog settings the capture relies on.

use tandem_tests::mariadb::MariaDb;

#[test]
fn the_harness_starts_mariadb_with_a_row_binlog_and_strict_gtids_that_survive_a_crash() {
    let mut db = MariaDb::start(41).unwrap();
    assert_eq!(
        db.sql("SELECT @@binlog_format, @@binlog_row_image, @@gtid_strict_mode, @@server_id, @@log_bin"),
        "ROW\tFULL\t1\t41\t1"
    );
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT)");
    db.sql("INSERT INTO shop.orders VALUES (1, 'lamp')");
    // Two DDL statements and one transaction, each its own GTID in domain 0 from server 41.
    assert_eq!(db.sql("SELECT @@gtid_binlog_pos"), "0-41-3");

    // A crash loses nothing committed, and the GTID position comes back with the data.
    db.kill();
    db.restart().unwrap();
    assert_eq!(db.sql("SELECT item FROM shop.orders WHERE id = 1"), "lamp");
    assert_eq!(db.sql("SELECT @@gtid_binlog_pos"), "0-41-3");
    // Two servers side by side, each on its own port and data directory.
    let other = MariaDb::start(42).unwrap();
    assert_ne!(other.port, db.port);
    assert_eq!(other.sql("SELECT @@gtid_binlog_pos"), "");
}
