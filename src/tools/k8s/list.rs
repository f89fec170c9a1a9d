//! The one list of the read tools: the objects of a namespace matching the caller's
//! selectors, read page by page, at most the caller's maximum, and whether more matched.

use kube::Api;

use super::{api_failure, list_params};
use crate::tools::ToolFailure;

/// Page size of the list requests.
pub(super) const PAGE: u64 = 500;
/// The most pages read for one call (a filter may leave a page with fewer objects than it
/// holds).
pub(super) const MAX_PAGES: usize = 10;

/// The objects `api` lists with the selectors that `keep` keeps: at most `max`, and whether
/// more matched (more objects, or more pages than [`MAX_PAGES`]). `what` names the list in
/// the failure (`listing pods`).
pub(super) async fn list_capped<K>(
    api: &Api<K>,
    what: &str,
    label_selector: Option<&str>,
    field_selector: Option<&str>,
    max: u64,
    keep: impl Fn(&K) -> bool,
) -> Result<(Vec<K>, bool), ToolFailure>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut lp = list_params(label_selector, field_selector, PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.map_err(|e| api_failure(what, e))?;
        for item in page.items {
            if !keep(&item) {
                continue;
            }
            if out.len() as u64 == max {
                return Ok((out, true));
            }
            out.push(item);
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok((out, false));
        }
    }
    // More pages than are read: there may be more.
    Ok((out, true))
}
