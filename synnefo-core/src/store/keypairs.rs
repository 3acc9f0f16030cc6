//! [`KeypairStore`] over sea-orm: users' key pairs.
//!
//! The per-user bound is checked in the transaction that inserts: the
//! user's row is locked first (a no-op `UPDATE`, which takes the row lock
//! on PostgreSQL and MySQL; on SQLite the transaction starts with the
//! write lock), so concurrent creates of one user cannot both pass the
//! count.

use async_trait::async_trait;
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::SeaStore;
use super::convert::now;
use super::entities::keypair;
use super::sql::{Sql, db_err, insert_returning_id, insert_stmt};
use crate::error::StoreError;
use crate::model::{Keypair, KeypairType, NewKeypair};
use crate::ports::KeypairStore;

fn keypair_of(m: keypair::Model) -> Result<Keypair, StoreError> {
    let kind = KeypairType::parse(&m.kind)
        .ok_or_else(|| StoreError::Corrupt(format!("keypair {}: type {:?}", m.id, m.kind)))?;
    Ok(Keypair {
        id: m.id,
        user_id: m.user_id,
        name: m.name,
        kind,
        fingerprint: m.fingerprint,
        public_key: m.public_key,
        created: m.created,
    })
}

#[async_trait]
impl KeypairStore for SeaStore {
    async fn create_keypair(
        &self,
        new: &NewKeypair,
        limit: Option<i64>,
    ) -> Result<Keypair, StoreError> {
        let txn = self.begin_write().await?;
        let mut lock = Sql::new(self.db_backend());
        lock.push("UPDATE users SET enabled = enabled WHERE id = ")
            .bind(new.user_id.as_str());
        let locked = txn.execute(lock.build()).await.map_err(db_err)?;
        if locked.rows_affected() == 0 {
            // MySQL counts changed rows only: tell "no such user" apart.
            let exists = super::entities::user::Entity::find_by_id(new.user_id.clone())
                .one(&txn)
                .await
                .map_err(db_err)?
                .is_some();
            if !exists {
                return Err(StoreError::NotFound(format!("user {}", new.user_id)));
            }
        }
        if let Some(limit) = limit {
            let in_use = keypair::Entity::find()
                .filter(keypair::Column::UserId.eq(new.user_id.as_str()))
                .count(&txn)
                .await
                .map_err(db_err)?;
            let in_use = i64::try_from(in_use).unwrap_or(i64::MAX);
            if in_use + 1 > limit {
                return Err(StoreError::QuotaExceeded {
                    resource: "keypairs",
                    limit,
                    in_use,
                    requested: 1,
                });
            }
        }
        let created = now();
        let am = keypair::ActiveModel {
            id: NotSet,
            user_id: Set(new.user_id.clone()),
            name: Set(new.name.clone()),
            kind: Set(new.kind.as_str().to_string()),
            fingerprint: Set(new.fingerprint.clone()),
            public_key: Set(new.public_key.clone()),
            created: Set(created),
        };
        let id = insert_returning_id(
            &txn,
            insert_stmt(self.db_backend(), &am)?,
            keypair::Column::Id,
        )
        .await
        .map_err(|e| match e {
            StoreError::Integrity(_) => {
                StoreError::Integrity(format!("Key pair '{}' already exists.", new.name))
            }
            other => other,
        })?;
        txn.commit().await.map_err(db_err)?;
        Ok(Keypair {
            id,
            user_id: new.user_id.clone(),
            name: new.name.clone(),
            kind: new.kind,
            fingerprint: new.fingerprint.clone(),
            public_key: new.public_key.clone(),
            created,
        })
    }

    async fn keypairs(
        &self,
        user_id: &str,
        marker: Option<String>,
        limit: Option<u64>,
    ) -> Result<Vec<Keypair>, StoreError> {
        let mut q = keypair::Entity::find()
            .filter(keypair::Column::UserId.eq(user_id))
            .order_by_asc(keypair::Column::Name);
        if let Some(m) = marker {
            q = q.filter(keypair::Column::Name.gt(m));
        }
        if let Some(l) = limit {
            q = q.limit(l);
        }
        q.all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(keypair_of)
            .collect()
    }

    async fn keypair(&self, user_id: &str, name: &str) -> Result<Option<Keypair>, StoreError> {
        keypair::Entity::find()
            .filter(keypair::Column::UserId.eq(user_id))
            .filter(keypair::Column::Name.eq(name))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(keypair_of)
            .transpose()
    }

    async fn delete_keypair(&self, user_id: &str, name: &str) -> Result<(), StoreError> {
        let res = keypair::Entity::delete_many()
            .filter(keypair::Column::UserId.eq(user_id))
            .filter(keypair::Column::Name.eq(name))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("keypair {name}")));
        }
        Ok(())
    }
}
