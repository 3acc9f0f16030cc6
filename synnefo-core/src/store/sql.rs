//! Raw-SQL helpers: a tiny statement builder with the right placeholder
//! style per backend, and the mapping of database errors to [`StoreError`].

use sea_orm::sea_query::{InsertStatement, IntoIden, Query};
use sea_orm::sqlx;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DbBackend, DbErr, EntityTrait, Iterable,
    RuntimeErr, SqlErr, Statement, Value,
};

use super::convert::portable;
use crate::error::StoreError;

/// Builds one SQL statement with bound values.
pub(crate) struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    /// An empty statement for `backend`.
    pub(crate) fn new(backend: DbBackend) -> Self {
        Sql {
            backend,
            text: String::with_capacity(256),
            values: Vec::new(),
        }
    }

    /// Appends SQL text.
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder bound to `v`.
    pub(crate) fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(portable(self.backend, v.into()));
        if self.backend == DbBackend::Postgres {
            self.text.push('$');
            self.text.push_str(&self.values.len().to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    /// Appends `(?, ?, ...)`-style list of placeholders for `vs`.
    pub(crate) fn bind_list<V: Into<Value>>(
        &mut self,
        vs: impl IntoIterator<Item = V>,
    ) -> &mut Self {
        self.push("(");
        for (i, v) in vs.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self.push(")")
    }

    /// The finished statement.
    pub(crate) fn build(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// The type name to `CAST(... AS <it>)` a 64-bit integer to (MySQL returns
/// `DECIMAL` for `SUM`, which does not decode as `i64`).
pub(crate) fn bigint_cast(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "SIGNED",
        DbBackend::Postgres => "BIGINT",
        DbBackend::Sqlite => "INTEGER",
    }
}

fn database_error(e: &DbErr) -> Option<&(dyn sqlx::error::DatabaseError + 'static)> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(d)))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(d)))
        | DbErr::Conn(RuntimeErr::SqlxError(sqlx::Error::Database(d))) => Some(d.as_ref()),
        _ => None,
    }
}

/// True for errors that mean "another transaction got in the way; retry":
/// deadlocks, serialization failures, lock timeouts, `SQLITE_BUSY`.
fn is_contention(e: &DbErr) -> bool {
    let Some(d) = database_error(e) else {
        return false;
    };
    if let Some(my) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // 1213 deadlock, 1205 lock wait timeout
        return matches!(my.number(), 1205 | 1213);
    }
    let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
    if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        // serialization_failure, deadlock_detected, lock_not_available
        return matches!(code.as_str(), "40001" | "40P01" | "55P03");
    }
    if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes
        return code
            .parse::<i32>()
            .map(|c| matches!(c & 0xff, 5 | 6))
            .unwrap_or(false);
    }
    false
}

/// Maps a sea-orm error to the port's error.
pub(crate) fn db_err(e: DbErr) -> StoreError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(m)) => {
            return StoreError::Integrity(format!("already exists: {m}"));
        }
        Some(SqlErr::ForeignKeyConstraintViolation(m)) => {
            return StoreError::Integrity(format!(
                "refers to a missing or still-referenced row: {m}"
            ));
        }
        _ => {}
    }
    if is_contention(&e) {
        return StoreError::Conflict(format!("database contention ({e})"));
    }
    match e {
        DbErr::RecordNotFound(what) => StoreError::NotFound(what),
        DbErr::Type(m) | DbErr::Json(m) => StoreError::Corrupt(m),
        DbErr::TryIntoErr { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Database(other.to_string()),
    }
}

/// Like [`db_err`], but a foreign-key violation means `what` does not exist.
pub(crate) fn db_err_fk(what: impl FnOnce() -> String) -> impl FnOnce(DbErr) -> StoreError {
    move |e| match e.sql_err() {
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::NotFound(what()),
        _ => db_err(e),
    }
}

/// An `INSERT` of the set fields of `am`, with values made portable
/// (entity inserts would bind UTC timestamps as MySQL `TIMESTAMP`s).
pub(crate) fn insert_stmt<A: ActiveModelTrait>(
    backend: DbBackend,
    am: &A,
) -> Result<InsertStatement, StoreError> {
    let mut cols = Vec::new();
    let mut vals = Vec::new();
    for c in <A::Entity as EntityTrait>::Column::iter() {
        if let ActiveValue::Set(v) | ActiveValue::Unchanged(v) = am.get(c) {
            cols.push(c);
            vals.push(portable(backend, v).into());
        }
    }
    let mut stmt = Query::insert();
    stmt.into_table(A::Entity::default())
        .columns(cols)
        .values(vals)
        .map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(stmt)
}

/// Runs an `INSERT` built by [`insert_stmt`].
pub(crate) async fn exec_insert(
    db: &impl ConnectionTrait,
    stmt: &InsertStatement,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute(backend.build(stmt)).await.map(|_| ())
}

/// Runs an `INSERT` of one row and returns the generated id of `id_col`
/// (`RETURNING` on PostgreSQL and SQLite, `LAST_INSERT_ID()` on MySQL).
pub(crate) async fn insert_returning_id(
    db: &impl ConnectionTrait,
    mut stmt: InsertStatement,
    id_col: impl IntoIden + Send + 'static,
) -> Result<i64, StoreError> {
    let backend = db.get_database_backend();
    if backend == DbBackend::MySql {
        let res = db.execute(backend.build(&stmt)).await.map_err(db_err)?;
        return i64::try_from(res.last_insert_id())
            .map_err(|_| StoreError::Corrupt("generated id out of range".into()));
    }
    stmt.returning_col(id_col);
    let row = db
        .query_one(backend.build(&stmt))
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Database("INSERT ... RETURNING returned no row".into()))?;
    row.try_get_by_index::<i64>(0).map_err(db_err)
}

/// Splits `items` into chunks small enough for every backend's limits on
/// bound parameters and compound selects.
pub(crate) const IN_CHUNK: usize = 500;
