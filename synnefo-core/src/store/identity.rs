//! [`IdentityStore`] over sea-orm: users, projects, memberships, tokens,
//! quotas and usage.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

use super::SeaStore;
use super::convert::{self, now, ts};
use super::entities::{membership, project, quota, token, user};
use super::sql::{Sql, bigint_cast, db_err, db_err_fk, exec_insert, insert_stmt};
use crate::error::StoreError;
use crate::model::{Project, Quota, Token, Usage, User};
use crate::ports::IdentityStore;

/// A new opaque id: 32 lowercase hex chars (Keystone style).
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Non-deleted servers of a project and their summed flavor resources. A
/// server with a resize on record (running or awaiting confirmation) counts,
/// for each resource, the larger of its flavor and the resize's two
/// flavors: the resize holds what either end needs until it is over, so a
/// revert never has to be checked against the quota again.
pub(crate) async fn project_usage(
    db: &impl ConnectionTrait,
    project_id: &str,
) -> Result<Usage, StoreError> {
    let backend = db.get_database_backend();
    let cast = bigint_cast(backend);
    // the largest of three values, where a resize's may be NULL (no resize):
    // MySQL's GREATEST is NULL if any argument is; SQLite has no GREATEST
    // but a many-argument MAX with the same meaning
    let greatest = match backend {
        sea_orm::DbBackend::Sqlite => "MAX",
        _ => "GREATEST",
    };
    let held = |col: &str| {
        format!("{greatest}(f.{col}, COALESCE(rf.{col}, f.{col}), COALESCE(rt.{col}, f.{col}))")
    };
    let mut q = Sql::new(backend);
    q.push(&format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM({}), 0) AS {cast}), CAST(COALESCE(SUM({}), 0) AS {cast}) \
         FROM vms v JOIN flavors f ON f.id = v.flavor_id \
         LEFT JOIN flavors rf ON rf.id = v.resize_from_flavor_id \
         LEFT JOIN flavors rt ON rt.id = v.resize_to_flavor_id WHERE v.project_id = ",
        held("vcpus"),
        held("ram_mib"),
    ))
    .bind(project_id)
    .push(" AND v.deleted = ")
    .bind(false);
    let row = db
        .query_one(q.build())
        .await
        .map_err(db_err)?
        .ok_or_else(|| StoreError::Database("usage query returned no row".into()))?;
    Ok(Usage {
        servers: row.try_get_by_index::<i64>(0).map_err(db_err)?,
        vcpus: row.try_get_by_index::<i64>(1).map_err(db_err)?,
        ram_mib: row.try_get_by_index::<i64>(2).map_err(db_err)?,
    })
}

#[async_trait]
impl IdentityStore for SeaStore {
    async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> Result<User, StoreError> {
        let row = user::Model {
            id: new_id(),
            name: name.to_string(),
            password_hash: password_hash.to_string(),
            enabled: true,
            is_admin,
            created: now(),
        };
        let am = user::ActiveModel {
            id: Set(row.id.clone()),
            name: Set(row.name.clone()),
            password_hash: Set(row.password_hash.clone()),
            enabled: Set(row.enabled),
            is_admin: Set(row.is_admin),
            created: Set(row.created),
        };
        exec_insert(&self.db, &insert_stmt(self.db_backend(), &am)?)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Integrity(_) => {
                    StoreError::Integrity(format!("user {name:?} already exists"))
                }
                other => other,
            })?;
        Ok(convert::user(row))
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = user::Entity::find()
            .filter(user::Column::Name.eq(name))
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row.map(convert::user))
    }

    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = user::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row.map(convert::user))
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = user::Entity::find()
            .order_by_asc(user::Column::Name)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(convert::user).collect())
    }

    async fn update_user(
        &self,
        id: &str,
        password_hash: Option<String>,
        enabled: Option<bool>,
    ) -> Result<User, StoreError> {
        if password_hash.is_some() || enabled.is_some() {
            let new_password = password_hash.is_some();
            let mut up = user::Entity::update_many().filter(user::Column::Id.eq(id));
            if let Some(h) = password_hash {
                up = up.col_expr(user::Column::PasswordHash, Expr::value(h));
            }
            if let Some(e) = enabled {
                up = up.col_expr(user::Column::Enabled, Expr::value(e));
            }
            up.exec(&self.db).await.map_err(db_err)?;
            if new_password {
                // A new password ends every session of the old one.
                token::Entity::update_many()
                    .col_expr(token::Column::Revoked, Expr::value(true))
                    .filter(token::Column::UserId.eq(id))
                    .exec(&self.db)
                    .await
                    .map_err(db_err)?;
            }
        }
        self.user(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id}")))
    }

    async fn create_project(&self, name: &str) -> Result<Project, StoreError> {
        let row = project::Model {
            id: new_id(),
            name: name.to_string(),
            created: now(),
            vm_generation: 0,
        };
        let am = project::ActiveModel {
            id: Set(row.id.clone()),
            name: Set(row.name.clone()),
            created: Set(row.created),
            vm_generation: Set(0),
        };
        exec_insert(&self.db, &insert_stmt(self.db_backend(), &am)?)
            .await
            .map_err(|e| match db_err(e) {
                StoreError::Integrity(_) => {
                    StoreError::Integrity(format!("project {name:?} already exists"))
                }
                other => other,
            })?;
        Ok(convert::project(row))
    }

    async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        let row = project::Entity::find()
            .filter(project::Column::Name.eq(name))
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row.map(convert::project))
    }

    async fn project(&self, id: &str) -> Result<Option<Project>, StoreError> {
        let row = project::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row.map(convert::project))
    }

    async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = project::Entity::find()
            .order_by_asc(project::Column::Name)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(convert::project).collect())
    }

    async fn add_member(&self, user_id: &str, project_id: &str) -> Result<(), StoreError> {
        let stmt = Query::insert()
            .into_table(membership::Entity)
            .columns([membership::Column::UserId, membership::Column::ProjectId])
            .values([user_id.into(), project_id.into()])
            .map_err(|e| StoreError::Database(e.to_string()))?
            .on_conflict(
                OnConflict::columns([membership::Column::UserId, membership::Column::ProjectId])
                    .do_nothing_on([membership::Column::UserId])
                    .to_owned(),
            )
            .to_owned();
        let backend = self.db_backend();
        self.db
            .execute(backend.build(&stmt))
            .await
            .map_err(db_err_fk(|| {
                format!("user {user_id} or project {project_id}")
            }))?;
        Ok(())
    }

    async fn user_projects(&self, user_id: &str) -> Result<Vec<Project>, StoreError> {
        let rows = project::Entity::find()
            .filter(
                project::Column::Id.in_subquery(
                    Query::select()
                        .column(membership::Column::ProjectId)
                        .from(membership::Entity)
                        .and_where(membership::Column::UserId.eq(user_id))
                        .to_owned(),
                ),
            )
            .order_by_asc(project::Column::Name)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(convert::project).collect())
    }

    async fn store_token(&self, t: &Token) -> Result<(), StoreError> {
        let am = token::ActiveModel {
            digest: Set(t.digest.clone()),
            user_id: Set(t.user_id.clone()),
            project_id: Set(t.project_id.clone()),
            issued: Set(t.issued),
            expires: Set(t.expires),
            revoked: Set(t.revoked),
        };
        exec_insert(&self.db, &insert_stmt(self.db_backend(), &am)?)
            .await
            .map_err(db_err_fk(|| {
                format!("user {} or project {}", t.user_id, t.project_id)
            }))?;
        Ok(())
    }

    async fn token(&self, digest: &str) -> Result<Option<Token>, StoreError> {
        let row = token::Entity::find_by_id(digest.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row.map(convert::token))
    }

    async fn revoke_token(&self, digest: &str) -> Result<(), StoreError> {
        let Some(row) = token::Entity::find_by_id(digest.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?
        else {
            return Ok(());
        };
        // The token and those rescoped from it: same user, the same expiry
        // (a rescoped token keeps its parent's), issued no earlier.
        let backend = self.db_backend();
        token::Entity::update_many()
            .col_expr(token::Column::Revoked, Expr::value(true))
            .filter(
                token::Column::Digest.eq(digest).or(token::Column::UserId
                    .eq(row.user_id.clone())
                    .and(token::Column::Expires.eq(ts(backend, row.expires)))
                    .and(token::Column::Issued.gte(ts(backend, row.issued)))),
            )
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn purge_expired_tokens(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let res = token::Entity::delete_many()
            .filter(token::Column::Expires.lt(ts(self.db_backend(), before)))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected)
    }

    async fn set_quota(&self, project_id: &str, q: Quota) -> Result<(), StoreError> {
        let stmt = Query::insert()
            .into_table(quota::Entity)
            .columns([
                quota::Column::ProjectId,
                quota::Column::Servers,
                quota::Column::Vcpus,
                quota::Column::RamMib,
            ])
            .values([
                project_id.into(),
                q.servers.into(),
                q.vcpus.into(),
                q.ram_mib.into(),
            ])
            .map_err(|e| StoreError::Database(e.to_string()))?
            .on_conflict(
                OnConflict::column(quota::Column::ProjectId)
                    .update_columns([
                        quota::Column::Servers,
                        quota::Column::Vcpus,
                        quota::Column::RamMib,
                    ])
                    .to_owned(),
            )
            .to_owned();
        let backend = self.db_backend();
        self.db
            .execute(backend.build(&stmt))
            .await
            .map_err(db_err_fk(|| format!("project {project_id}")))?;
        Ok(())
    }

    async fn quota(&self, project_id: &str) -> Result<Quota, StoreError> {
        let row = quota::Entity::find_by_id(project_id.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row
            .map(|r| Quota {
                servers: r.servers,
                vcpus: r.vcpus,
                ram_mib: r.ram_mib,
            })
            .unwrap_or_default())
    }

    async fn usage(&self, project_id: &str) -> Result<Usage, StoreError> {
        project_usage(&self.db, project_id).await
    }
}
