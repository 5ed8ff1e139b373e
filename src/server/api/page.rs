//! Paging shared by the paged endpoints (SPEC §8): `?limit=` (default 100, max 1000) and
//! `?cursor=`, answered as `{"items": [...], "next_cursor": ..., "total": N}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::server::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// `?limit=&cursor=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Where the previous page stopped (its `next_cursor`); opaque.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The limit asked for, checked: above 1000 or 0 is a 400.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit {n} is out of range; ask for 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

impl PageQuery {
    /// The cursor of a page keyed by row id (the queue, the audit log, job runs): the last id
    /// the previous page gave; empty or absent is the first page.
    pub fn id_cursor(&self) -> Result<Option<i64>, ApiError> {
        self.cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "cursor `{c}` is not one this endpoint gave; pass a page's next_cursor as it is"
                    ))
                })
            })
            .transpose()
    }
}

/// One page of `T`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Items in all pages together (with the filters applied).
    pub total: u64,
}
