//! HTTP route matching as Spin 4.0.2 does it (`spin-routes`, on `routefinder`): exact routes
//! beat wildcards, the longest match wins, `/...` (or `/*`) is a trailing wildcard, `:name`
//! segments capture, and private routes are not routable from outside.

use crate::manifest::{HttpTrigger, Route};
use anyhow::{Result, anyhow};
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct Entry {
    component: String,
    raw_route: String,
}

pub struct Router {
    router: routefinder::Router<Entry>,
}

/// The result of matching a path, with what Spin puts in its `spin-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub component: String,
    /// The route as declared (`spin-raw-component-route`, `spin-matched-route`).
    pub raw_route: String,
    /// The route without its `/...` suffix (`spin-component-route`).
    pub route_or_prefix: String,
    /// What the wildcard matched (`spin-path-info`).
    pub path_info: String,
    /// `:name` captures (`spin-path-match-<name>`).
    pub named: HashMap<String, String>,
}

fn sanitize(route: &str) -> String {
    let r = if route.starts_with('/') {
        route.to_string()
    } else {
        format!("/{route}")
    };
    match r.strip_suffix('/') {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => r,
    }
}

impl Router {
    pub fn build(triggers: &[HttpTrigger]) -> Result<Router> {
        let mut router = routefinder::Router::new();
        let mut seen = HashMap::new();
        for t in triggers {
            let Route::Path(raw) = &t.route else { continue };
            let based = sanitize(raw);
            if let Some(other) = seen.insert(based.clone(), t.component.clone()) {
                return Err(anyhow!(
                    "duplicate route `{based}` (components `{other}` and `{}`)",
                    t.component
                ));
            }
            let spec = match based.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => based.clone(),
            };
            router
                .add(
                    spec.as_str(),
                    Entry {
                        component: t.component.clone(),
                        raw_route: raw.clone(),
                    },
                )
                .map_err(|e| anyhow!("route `{raw}`: {e}"))?;
        }
        Ok(Router { router })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let m = self.router.best_match(path)?;
        let entry = m.handler();
        let captures = m.captures();
        // Spin keeps trailing slashes that routefinder drops.
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(w) => match (w.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".into(),
                (false, false) => format!("/{w}"),
                (false, true) => format!("/{w}/"),
            },
        };
        let named = captures
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(RouteMatch {
            component: entry.component.clone(),
            route_or_prefix: entry
                .raw_route
                .strip_suffix("/...")
                .unwrap_or(&entry.raw_route)
                .to_string(),
            raw_route: entry.raw_route.clone(),
            path_info,
            named,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let t: Vec<HttpTrigger> = routes
            .iter()
            .map(|(r, c)| HttpTrigger {
                route: Route::Path(r.to_string()),
                component: c.to_string(),
            })
            .collect();
        Router::build(&t).unwrap()
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = router(&[
            ("/...", "root"),
            ("/api/...", "api"),
            ("/api/v1/health", "health"),
            ("/users/:id", "user"),
        ]);
        assert_eq!(r.route("/api/v1/health").unwrap().component, "health");
        assert_eq!(r.route("/api/v1/other").unwrap().component, "api");
        assert_eq!(r.route("/api/v1/other").unwrap().path_info, "/v1/other");
        assert_eq!(r.route("/api").unwrap().path_info, "");
        assert_eq!(r.route("/api/").unwrap().path_info, "/");
        assert_eq!(r.route("/elsewhere").unwrap().component, "root");
        let u = r.route("/users/42").unwrap();
        assert_eq!(
            (u.component.as_str(), u.named["id"].as_str()),
            ("user", "42")
        );
        assert_eq!(r.route("/api/x").unwrap().route_or_prefix, "/api");
    }
}
