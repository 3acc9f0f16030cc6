//! A fresh, migrated database per test.
//!
//! SQLite lives in memory or in a temporary directory; on a server
//! (PostgreSQL or MariaDB/MySQL) each test gets a uniquely named database,
//! created for it and dropped when the [`TestDb`] goes out of scope (also
//! when the test panics), so tests running in parallel never see each
//! other's rows. The database in a server URL is only used to create and
//! drop the per-test one.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use synnefo_core::store::SeaStore;
use synnefo_core::testing::{mysql_url, pg_url, service_unavailable};

/// `url` with its database name replaced by `db` (query string kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..]
        .find('/')
        .map_or(base.len(), |i| host_start + i);
    format!("{}/{db}{query}", &base[..host_end])
}

/// An admin connection that gives up quickly on a down server.
pub async fn admin_connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(opts).await
}

/// Which server a [`TestDb`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL.
    Postgres,
    /// MariaDB or MySQL.
    Mysql,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::Mysql => "MariaDB/MySQL",
        }
    }

    fn create_sql(self, db: &str) -> String {
        match self {
            Server::Postgres => format!("CREATE DATABASE {db}"),
            Server::Mysql => {
                format!("CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            }
        }
    }

    fn drop_sql(self, db: &str) -> String {
        match self {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            Server::Mysql => format!("DROP DATABASE IF EXISTS {db}"),
        }
    }
}

struct ServerDb {
    server: Server,
    admin_url: String,
    name: String,
}

/// A store on a fresh, migrated database, removed when dropped.
pub struct TestDb {
    /// The store on it (a clone shares the pool).
    pub store: SeaStore,
    /// Its URL, for a `synnefo` process's settings.
    pub url: String,
    server: Option<ServerDb>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// SQLite in memory (`pool` connections share one database).
    pub async fn sqlite_memory() -> TestDb {
        let url = "sqlite::memory:".to_string();
        let store = SeaStore::connect(&url, 4)
            .await
            .expect("open in-memory SQLite");
        store.migrate().await.expect("migrate");
        TestDb {
            store,
            url,
            server: None,
            _dir: None,
        }
    }

    /// SQLite in a file of a temporary directory.
    pub async fn sqlite_file() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("synnefo.db").display());
        let store = SeaStore::connect(&url, 8).await.expect("open SQLite file");
        store.migrate().await.expect("migrate");
        TestDb {
            store,
            url,
            server: None,
            _dir: Some(dir),
        }
    }

    /// A database on the PostgreSQL of `SYNNEFO_TEST_DATABASE_URL`, or
    /// `None` once [`service_unavailable`] reported it unreachable.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        TestDb::on_server(test, Server::Postgres, &pg_url()).await
    }

    /// A database on the MariaDB of `SYNNEFO_TEST_MYSQL_URL`, or `None`
    /// once [`service_unavailable`] reported it unreachable.
    pub async fn mysql(test: &str) -> Option<TestDb> {
        TestDb::on_server(test, Server::Mysql, &mysql_url()).await
    }

    /// A database on the server of `admin_url` (a private cluster's, say).
    pub async fn on_server(test: &str, server: Server, admin_url: &str) -> Option<TestDb> {
        let admin = match admin_connect(admin_url).await {
            Ok(db) => db,
            Err(e) => {
                service_unavailable(test, server.label(), &e.to_string());
                return None;
            }
        };
        let name = format!("synnefo_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&server.create_sql(&name))
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot create database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(admin_url, &name);
        // From here on the database is dropped whatever happens.
        let server_db = ServerDb {
            server,
            admin_url: admin_url.to_string(),
            name,
        };
        let store = match SeaStore::connect(&url, 8).await {
            Ok(s) => s,
            Err(e) => {
                drop_database(&server_db);
                panic!("{test}: cannot connect to {url}: {e}");
            }
        };
        let db = TestDb {
            store,
            url,
            server: Some(server_db),
            _dir: None,
        };
        db.store.migrate().await.expect("migrate");
        Some(db)
    }

    /// The database's name on its server (`None` for SQLite).
    pub fn name(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.name.as_str())
    }

    /// The URL of the server's maintenance database, to act on this one
    /// from outside it (`None` for SQLite).
    pub fn admin_url(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.admin_url.as_str())
    }

    /// Ends every other session of this PostgreSQL database
    /// (`pg_terminate_backend`) from a fresh admin connection, as a server
    /// restart would; returns how many.
    pub async fn kill_connections(&self) -> Result<usize, String> {
        let s = self
            .server
            .as_ref()
            .filter(|s| s.server == Server::Postgres)
            .ok_or("kill_connections needs a PostgreSQL database")?;
        let admin = admin_connect(&s.admin_url)
            .await
            .map_err(|e| format!("connecting to {}: {e}", s.admin_url))?;
        let rows = admin
            .query_all(sea_orm::Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{}' AND pid <> pg_backend_pid()",
                    s.name
                ),
            ))
            .await
            .map_err(|e| format!("pg_terminate_backend: {e}"));
        let _ = admin.close().await;
        Ok(rows?.len())
    }
}

/// Drops the database from a thread of its own: `Drop` may run on a
/// runtime thread, or during a panic.
fn drop_database(s: &ServerDb) {
    let (admin_url, sql) = (s.admin_url.clone(), s.server.drop_sql(&s.name));
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if let Ok(db) = admin_connect(&admin_url).await {
                if let Err(e) = db.execute_unprepared(&sql).await {
                    eprintln!("cleanup failed ({sql}): {e}");
                }
                let _ = db.close().await;
            }
        });
    })
    .join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            drop_database(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("mysql://root@h:3306/test?ssl-mode=disabled", "x"),
            "mysql://root@h:3306/x?ssl-mode=disabled"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
