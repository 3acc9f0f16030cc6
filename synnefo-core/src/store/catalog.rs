//! [`CatalogStore`] over sea-orm: flavors and images.

use async_trait::async_trait;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ActiveValue::NotSet, ActiveValue::Set, ConnectionTrait, EntityTrait, QueryOrder};

use super::SeaStore;
use super::convert::{self, to_json, ts};
use super::entities::{flavor, image};
use super::sql::{db_err, insert_returning_id, insert_stmt};
use crate::error::StoreError;
use crate::ids::FlavorId;
use crate::model::{Flavor, Image};
use crate::ports::CatalogStore;

#[async_trait]
impl CatalogStore for SeaStore {
    async fn create_flavor(&self, f: &Flavor) -> Result<Flavor, StoreError> {
        let am = flavor::ActiveModel {
            id: NotSet,
            name: Set(f.name.clone()),
            vcpus: Set(f.vcpus),
            ram_mib: Set(f.ram_mib),
            disk_gib: Set(f.disk_gib),
            disk_template: Set(f.disk_template.clone()),
            is_public: Set(f.is_public),
            deleted: Set(f.deleted),
        };
        let stmt = insert_stmt(self.db_backend(), &am)?;
        let id = insert_returning_id(&self.db, stmt, flavor::Column::Id)
            .await
            .map_err(|e| match e {
                StoreError::Integrity(_) => {
                    StoreError::Integrity(format!("flavor {:?} already exists", f.name))
                }
                other => other,
            })?;
        Ok(Flavor {
            id: FlavorId(id),
            ..f.clone()
        })
    }

    async fn list_flavors(&self) -> Result<Vec<Flavor>, StoreError> {
        let rows = flavor::Entity::find()
            .order_by_asc(flavor::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(convert::flavor).collect())
    }

    async fn flavor(&self, id: FlavorId) -> Result<Option<Flavor>, StoreError> {
        let row = flavor::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(db_err)?;
        Ok(row.map(convert::flavor))
    }

    async fn put_image(&self, img: &Image) -> Result<Image, StoreError> {
        use image::Column as C;
        let backend = self.db_backend();
        let stmt = Query::insert()
            .into_table(image::Entity)
            .columns([
                C::Id,
                C::Name,
                C::OsType,
                C::Osparams,
                C::Status,
                C::Metadata,
                C::MinDiskGib,
                C::MinRamMib,
                C::IsPublic,
                C::Owner,
                C::Created,
                C::Updated,
            ])
            .values([
                img.id.clone().into(),
                img.name.clone().into(),
                img.os_type.clone().into(),
                to_json(&img.osparams)?.into(),
                img.status.clone().into(),
                to_json(&img.metadata)?.into(),
                img.min_disk_gib.into(),
                img.min_ram_mib.into(),
                img.is_public.into(),
                img.owner.clone().into(),
                ts(backend, img.created).into(),
                ts(backend, img.updated).into(),
            ])
            .map_err(|e| StoreError::Database(e.to_string()))?
            .on_conflict(
                OnConflict::column(C::Id)
                    .update_columns([
                        C::Name,
                        C::OsType,
                        C::Osparams,
                        C::Status,
                        C::Metadata,
                        C::MinDiskGib,
                        C::MinRamMib,
                        C::IsPublic,
                        C::Owner,
                        C::Created,
                        C::Updated,
                    ])
                    .to_owned(),
            )
            .to_owned();
        self.db
            .execute(backend.build(&stmt))
            .await
            .map_err(db_err)?;
        self.image(&img.id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("image {} vanished after upsert", img.id)))
    }

    async fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let rows = image::Entity::find()
            .order_by_asc(image::Column::Created)
            .order_by_asc(image::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(convert::image).collect()
    }

    async fn image(&self, id: &str) -> Result<Option<Image>, StoreError> {
        let row = image::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await
            .map_err(db_err)?;
        row.map(convert::image).transpose()
    }
}
