//! `spin.toml` (manifest version 2): the parts a Spin 4.0.2 host acts on.

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    #[allow(dead_code)]
    application: toml::Value,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
    #[serde(default)]
    cron: Vec<RawCronTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    route: RawRoute,
    component: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private { private: bool },
}

/// The cron plugin's `CronTriggerConfig` (deny_unknown_fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCronTrigger {
    component: String,
    cron_expression: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    build: Option<RawBuild>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawBuild {
    pub command: BuildCommand,
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BuildCommand {
    One(String),
    Many(Vec<String>),
}

/// An HTTP route as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Path(String),
    Private,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: Route,
    pub component: String,
}

#[derive(Debug, Clone)]
pub struct CronTrigger {
    pub component: String,
    pub expression: String,
}

#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    pub source: PathBuf,
    pub key_value_stores: Vec<String>,
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables, already resolved against the application variables.
    pub variables: HashMap<String, String>,
    pub build: Option<RawBuild>,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub dir: PathBuf,
    pub http: Vec<HttpTrigger>,
    pub cron: Vec<CronTrigger>,
    pub components: BTreeMap<String, Component>,
    /// Application variables with their resolved values (secrets included: tests see all).
    pub app_variables: HashMap<String, String>,
}

/// Loads and validates a manifest the way `spin up` does before serving: unknown keys,
/// missing required variables, unresolvable templates, bad outbound host entries, store
/// labels without runtime configuration and malformed cron expressions are start-up errors.
pub fn load(path: &Path, provided: &BTreeMap<String, String>) -> Result<Manifest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: RawManifest =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if raw.spin_manifest_version != 2 {
        bail!(
            "unsupported spin_manifest_version {}",
            raw.spin_manifest_version
        );
    }
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();

    // Application variables: provided values (SPIN_VARIABLE_* or the test's map) win over
    // defaults; a required variable without a value stops the app.
    let mut env_values: BTreeMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("SPIN_VARIABLE_")
                .map(|n| (n.to_ascii_lowercase(), v))
        })
        .collect();
    env_values.extend(
        provided
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    let mut app_variables = HashMap::new();
    let mut defaults = HashMap::new();
    for (name, var) in &raw.variables {
        if !valid_variable_name(name) {
            bail!("invalid variable name `{name}`");
        }
        if var.required && var.default.is_some() {
            bail!("variable `{name}` cannot be both required and have a default");
        }
        let _ = var.secret;
        if let Some(d) = &var.default {
            defaults.insert(name.clone(), d.clone());
        }
        match env_values.get(name).or(var.default.as_ref()) {
            Some(v) => {
                app_variables.insert(name.clone(), v.clone());
            }
            None if var.required => bail!("required variable `{name}` has no value"),
            None => {}
        }
    }

    let mut components = BTreeMap::new();
    for (id, c) in raw.component {
        for label in &c.key_value_stores {
            // Without a runtime config only `default` exists.
            if label != "default" {
                bail!("component `{id}`: unknown key_value_stores label `{label}`");
            }
        }
        let mut variables = HashMap::new();
        for (name, template) in &c.variables {
            if !valid_variable_name(name) {
                bail!("component `{id}`: invalid variable name `{name}`");
            }
            // Resolution can fail at run time in Spin (a provider may supply it later);
            // with the env provider only, an unresolvable reference fails at get().
            if let Ok(v) = expand(template, &app_variables) {
                variables.insert(name.clone(), v);
            } else {
                check_references(template, &raw.variables)
                    .with_context(|| format!("component `{id}` variable `{name}`"))?;
            }
        }
        for entry in &c.allowed_outbound_hosts {
            // Templated entries are validated with the defaults at load time.
            let with_defaults = expand(entry, &defaults)
                .map_err(|e| anyhow!("component `{id}`: allowed_outbound_hosts `{entry}`: {e}"))?;
            crate::outbound::AllowedHost::parse(&with_defaults)
                .map_err(|e| anyhow!("component `{id}`: {e}"))?;
        }
        components.insert(
            id.clone(),
            Component {
                id: id.clone(),
                source: dir.join(&c.source),
                key_value_stores: c.key_value_stores,
                allowed_outbound_hosts: c.allowed_outbound_hosts,
                variables,
                build: c.build,
            },
        );
    }

    let mut http = Vec::new();
    for t in raw.trigger.http {
        if !components.contains_key(&t.component) {
            bail!("trigger references unknown component `{}`", t.component);
        }
        let route = match t.route {
            RawRoute::Path(p) => Route::Path(p),
            RawRoute::Private { private: true } => Route::Private,
            RawRoute::Private { private: false } => bail!("route `private = false` is not allowed"),
        };
        http.push(HttpTrigger {
            route,
            component: t.component,
        });
    }
    let mut cron = Vec::new();
    for t in raw.trigger.cron {
        if !components.contains_key(&t.component) {
            bail!(
                "cron trigger references unknown component `{}`",
                t.component
            );
        }
        crate::cron::Schedule::parse(&t.cron_expression)?;
        cron.push(CronTrigger {
            component: t.component,
            expression: t.cron_expression,
        });
    }
    Ok(Manifest {
        dir,
        http,
        cron,
        components,
        app_variables,
    })
}

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// Expands `{{ name }}` references.
pub fn expand(template: &str, values: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("unterminated template in `{template}`"))?;
        let name = after[..end].trim();
        let v = values
            .get(name)
            .ok_or_else(|| anyhow!("variable `{name}` has no value"))?;
        out.push_str(v);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_references(template: &str, declared: &BTreeMap<String, RawVariable>) -> Result<()> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("unterminated template"))?;
        let name = after[..end].trim();
        if !declared.contains_key(name) {
            bail!("references undeclared application variable `{name}`");
        }
        rest = &after[end + 2..];
    }
    Ok(())
}
