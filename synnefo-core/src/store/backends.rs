//! [`BackendStore`] over sea-orm: Ganeti clusters and their load.

use std::collections::HashMap;

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::SeaStore;
use super::convert::{self, now, ts};
use super::entities::backend;
use super::sql::{Sql, bigint_cast, db_err};
use crate::error::StoreError;
use crate::ids::BackendId;
use crate::model::{Backend, Usage};
use crate::ports::BackendStore;

#[async_trait]
impl BackendStore for SeaStore {
    async fn upsert_backend(
        &self,
        name: &str,
        host: &str,
        port: u16,
    ) -> Result<Backend, StoreError> {
        use backend::Column as C;
        let db_backend = self.db_backend();
        let stmt = Query::insert()
            .into_table(backend::Entity)
            .columns([
                C::Name,
                C::Host,
                C::Port,
                C::Drained,
                C::Offline,
                C::Created,
            ])
            .values([
                name.into(),
                host.into(),
                i32::from(port).into(),
                false.into(),
                false.into(),
                ts(db_backend, now()).into(),
            ])
            .map_err(|e| StoreError::Database(e.to_string()))?
            .on_conflict(
                OnConflict::column(C::Name)
                    .update_columns([C::Host, C::Port])
                    .to_owned(),
            )
            .to_owned();
        self.db
            .execute(db_backend.build(&stmt))
            .await
            .map_err(db_err)?;
        let row = backend::Entity::find()
            .filter(C::Name.eq(name))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::Database(format!("backend {name} vanished after upsert")))?;
        convert::backend(row)
    }

    async fn list_backends(&self) -> Result<Vec<Backend>, StoreError> {
        let rows = backend::Entity::find()
            .order_by_asc(backend::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(convert::backend).collect()
    }

    async fn backend(&self, id: BackendId) -> Result<Option<Backend>, StoreError> {
        let row = backend::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(db_err)?;
        row.map(convert::backend).transpose()
    }

    async fn set_backend_flags(
        &self,
        id: BackendId,
        drained: Option<bool>,
        offline: Option<bool>,
    ) -> Result<Backend, StoreError> {
        if drained.is_some() || offline.is_some() {
            let mut up = backend::Entity::update_many().filter(backend::Column::Id.eq(id.0));
            if let Some(d) = drained {
                up = up.col_expr(backend::Column::Drained, Expr::value(d));
            }
            if let Some(o) = offline {
                up = up.col_expr(backend::Column::Offline, Expr::value(o));
            }
            up.exec(&self.db).await.map_err(db_err)?;
        }
        self.backend(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("backend {id}")))
    }

    /// Every backend is in the map; one without servers has zero usage.
    async fn backend_usage(&self) -> Result<HashMap<BackendId, Usage>, StoreError> {
        let db_backend = self.db_backend();
        let cast = bigint_cast(db_backend);
        let mut q = Sql::new(db_backend);
        q.push(&format!(
            "SELECT b.id, CAST(COUNT(v.id) AS {cast}), CAST(COALESCE(SUM(f.vcpus), 0) AS {cast}), \
             CAST(COALESCE(SUM(f.ram_mib), 0) AS {cast}) \
             FROM backends b LEFT JOIN vms v ON v.backend_id = b.id AND v.deleted = "
        ))
        .bind(false)
        .push(" LEFT JOIN flavors f ON f.id = v.flavor_id GROUP BY b.id");
        let rows = self.db.query_all(q.build()).await.map_err(db_err)?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let id = row.try_get_by_index::<i64>(0).map_err(db_err)?;
            out.insert(
                BackendId(id),
                Usage {
                    servers: row.try_get_by_index::<i64>(1).map_err(db_err)?,
                    vcpus: row.try_get_by_index::<i64>(2).map_err(db_err)?,
                    ram_mib: row.try_get_by_index::<i64>(3).map_err(db_err)?,
                },
            );
        }
        Ok(out)
    }
}
