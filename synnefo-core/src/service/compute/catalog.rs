//! Flavors and images as the caller sees them.

use std::collections::HashMap;

use super::{Caller, Compute, FlavorFilter, ImageFilter, MAX_PAGE, image_visible, ref_id};
use crate::error::ServiceError;
use crate::ids::FlavorId;
use crate::model::{Flavor, Image};

impl Compute {
    /// A flavor by reference, or 400 (`for_create`) / 404.
    pub(super) async fn resolve_flavor(
        &self,
        reference: &str,
    ) -> Result<Option<Flavor>, ServiceError> {
        let Ok(id) = ref_id(reference).parse::<FlavorId>() else {
            return Ok(None);
        };
        Ok(self.store.flavor(id).await?)
    }

    /// A flavor visible to the caller, by id string; 404 otherwise.
    pub async fn flavor(&self, caller: &Caller, id: &str) -> Result<Flavor, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("Flavor {id} could not be found."));
        let flavor = self.resolve_flavor(id).await?.ok_or_else(not_found)?;
        if !flavor.is_public && !caller.is_admin {
            return Err(not_found());
        }
        Ok(flavor)
    }

    /// Flavors (not deleted), by id, filtered and paged.
    pub async fn list_flavors(
        &self,
        caller: &Caller,
        f: &FlavorFilter,
    ) -> Result<Vec<Flavor>, ServiceError> {
        let mut all: Vec<Flavor> = self
            .store
            .list_flavors()
            .await?
            .into_iter()
            .filter(|fl| !fl.deleted)
            .collect();
        all.sort_by_key(|fl| fl.id);
        let public = match (f.is_public, caller.is_admin) {
            (_, false) => Some(true),
            (p, true) => p,
        };
        let mut out: Vec<Flavor> = all
            .into_iter()
            .filter(|fl| public.is_none_or(|p| fl.is_public == p))
            .filter(|fl| f.min_disk.is_none_or(|d| fl.disk_gib >= d))
            .filter(|fl| f.min_ram.is_none_or(|r| fl.ram_mib >= r))
            .collect();
        if let Some(marker) = f.marker {
            let pos = out
                .iter()
                .position(|fl| fl.id == marker)
                .ok_or_else(|| ServiceError::BadRequest(format!("marker [{marker}] not found")))?;
            out.drain(..=pos);
        }
        out.truncate(f.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE) as usize);
        Ok(out)
    }

    /// An image visible to the caller; 404 otherwise.
    pub async fn image(&self, caller: &Caller, id: &str) -> Result<Image, ServiceError> {
        match self.store.image(id).await? {
            Some(img)
                if image_visible(&img, caller) && !img.status.eq_ignore_ascii_case("deleted") =>
            {
                Ok(img)
            }
            _ => Err(ServiceError::NotFound(format!(
                "Image {id} could not be found."
            ))),
        }
    }

    /// Images visible to the caller, by name then id, filtered and paged.
    pub async fn list_images(
        &self,
        caller: &Caller,
        f: &ImageFilter,
    ) -> Result<Vec<Image>, ServiceError> {
        let mut out: Vec<Image> = self
            .store
            .list_images()
            .await?
            .into_iter()
            .filter(|i| image_visible(i, caller) && !i.status.eq_ignore_ascii_case("deleted"))
            .filter(|i| f.name.as_ref().is_none_or(|n| &i.name == n))
            .filter(|i| f.ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
            .filter(|i| {
                f.status
                    .as_ref()
                    .is_none_or(|s| i.status.eq_ignore_ascii_case(s))
            })
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        if let Some(marker) = &f.marker {
            let pos = out
                .iter()
                .position(|i| &i.id == marker)
                .ok_or_else(|| ServiceError::BadRequest(format!("marker [{marker}] not found")))?;
            out.drain(..=pos);
        }
        out.truncate(f.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE) as usize);
        Ok(out)
    }

    /// All flavors by id, deleted ones included (to render servers).
    pub async fn flavor_map(&self) -> Result<HashMap<FlavorId, Flavor>, ServiceError> {
        Ok(self
            .store
            .list_flavors()
            .await?
            .into_iter()
            .map(|f| (f.id, f))
            .collect())
    }
}
