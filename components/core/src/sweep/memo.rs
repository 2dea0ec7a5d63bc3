//! Seller records and tool lists, read once per tick.

use crate::foundation::{clock::Clock, store::Store};
use crate::records::{journal::JournalResult, seller};
use crate::seller::port::SellerCalls;
use crate::seller::tools::{SellerTools, seller_tools};
use std::cell::RefCell;
use std::collections::HashMap;

/// A tick polls many operations of few sellers; a registration changed mid-tick is seen next.
#[derive(Default)]
pub struct SellerMemo {
    sellers: RefCell<HashMap<(String, String), Option<seller::Seller>>>,
    tools: RefCell<HashMap<(String, String), SellerTools>>,
}

impl SellerMemo {
    pub async fn seller(
        &self,
        store: &impl Store,
        tenant: &str,
        seller_id: &str,
    ) -> JournalResult<Option<seller::Seller>> {
        let key = (tenant.to_string(), seller_id.to_string());
        if let Some(s) = self.sellers.borrow().get(&key) {
            return Ok(s.clone());
        }
        let s = seller::get(store, tenant, seller_id).await?;
        self.sellers.borrow_mut().insert(key, s.clone());
        Ok(s)
    }

    pub async fn tools(
        &self,
        store: &impl Store,
        clock: &dyn Clock,
        calls: &impl SellerCalls,
        seller: &seller::Seller,
    ) -> JournalResult<SellerTools> {
        let key = (seller.tenant_id.clone(), seller.seller_id.clone());
        if let Some(t) = self.tools.borrow().get(&key) {
            return Ok(t.clone());
        }
        let t = seller_tools(store, clock, calls, seller).await?;
        if !t.assumed {
            // An assumption (no `tools/list` answer) is not kept: the next poll asks again.
            self.tools.borrow_mut().insert(key, t.clone());
        }
        Ok(t)
    }
}
