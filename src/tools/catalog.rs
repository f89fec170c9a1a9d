//! The catalog: every tool the service offers, sorted by name.
//!
//! The catalog is built once at start-up from the tool families' registrations and never
//! changes while the service runs, so lookups need no locking. It knows nothing about sessions
//! or principals: which tools a caller may see or run is the policy's decision.

use std::fmt;
use std::sync::Arc;

use super::tool::{ErasedTool, Tool, erase};
use super::{ToolSpec, artifact, fs, git, k8s, repo, workspace};

/// The tools the service offers, sorted by name, names unique.
#[derive(Clone)]
pub struct Catalog {
    tools: Vec<Arc<dyn ErasedTool>>,
}

/// Collects the tools of a catalog: each family's `register` adds its tools here.
#[derive(Default)]
pub struct Registry {
    tools: Vec<Arc<dyn ErasedTool>>,
}

impl Registry {
    /// Adds a typed tool (its schemas and path fields are derived here).
    pub fn register<T: Tool>(&mut self, tool: T) -> &mut Self {
        self.tools.push(erase(tool));
        self
    }

    /// The catalog of the registered tools. When two share a name the first registered wins:
    /// the built-in families never do this (a unit test checks it).
    pub fn build(self) -> Catalog {
        let mut tools = self.tools;
        // Stable sort keeps the registration order among equal names, so dedup keeps the first.
        tools.sort_by(|a, b| a.spec().name.cmp(b.spec().name));
        tools.dedup_by(|later, earlier| later.spec().name == earlier.spec().name);
        Catalog { tools }
    }
}

impl Catalog {
    /// Every built-in tool (the `fs.*`, `git.*`, `repo.*`, `artifact.*`, `workspace.*` and
    /// `k8s.*` families).
    pub fn builtin() -> Self {
        let mut registry = Registry::default();
        fs::register(&mut registry);
        git::register(&mut registry);
        repo::register(&mut registry);
        artifact::register(&mut registry);
        workspace::register(&mut registry);
        k8s::register(&mut registry);
        registry.build()
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ErasedTool>> {
        self.tools
            .binary_search_by(|t| t.spec().name.cmp(name))
            .ok()
            .map(|i| &self.tools[i])
    }

    /// Every tool, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Arc<dyn ErasedTool>> + '_ {
        self.tools.iter()
    }

    /// Every tool's catalog entry, sorted by name.
    pub fn specs(&self) -> impl ExactSizeIterator<Item = &ToolSpec> + '_ {
        self.tools.iter().map(|t| t.spec())
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether the catalog has no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.spec().name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(false)
            .build(schema)
            .unwrap_or_else(|e| panic!("not a valid JSON Schema: {e}: {schema}"))
    }

    #[test]
    fn builtin_names_are_unique_and_sorted() {
        let catalog = Catalog::builtin();
        let names: Vec<&str> = catalog.specs().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        let mut registry = Registry::default();
        fs::register(&mut registry);
        git::register(&mut registry);
        repo::register(&mut registry);
        artifact::register(&mut registry);
        workspace::register(&mut registry);
        k8s::register(&mut registry);
        assert_eq!(
            catalog.len(),
            registry.tools.len(),
            "no tool was dropped as a duplicate"
        );
        assert_eq!(catalog.len(), 14 + 13 + 17 + 3 + 1 + 8);
        assert!(!catalog.is_empty());
    }

    #[test]
    fn get_finds_every_tool_and_nothing_else() {
        let catalog = Catalog::builtin();
        for spec in catalog.specs() {
            assert_eq!(
                catalog.get(spec.name).map(|t| t.spec().name),
                Some(spec.name)
            );
        }
        assert!(catalog.get("fs.nope").is_none());
        assert!(catalog.get("").is_none());
        assert!(catalog.get("FS.LIST").is_none(), "names are case-sensitive");
    }

    #[test]
    fn every_tool_has_complete_metadata_and_valid_derived_schemas() {
        for spec in Catalog::builtin().specs() {
            let name = spec.name;
            assert!(!spec.description.trim().is_empty(), "{name}: description");
            assert!(spec.constraints.timeout_seconds > 0, "{name}: timeout");
            assert_eq!(spec.observability.trace_name, "workspace.tools", "{name}");
            assert_eq!(spec.observability.span_name, name, "{name}");
            assert!(
                ["low", "medium", "high"].contains(&spec.cost_hint),
                "{name}: cost_hint"
            );
            for (which, s) in [
                ("input", &spec.input_schema),
                ("output", &spec.output_schema),
            ] {
                validator(s);
                assert_eq!(s["type"], "object", "{name} {which}");
                assert!(
                    s.get("$ref").is_none() && s.get("$defs").is_none(),
                    "{name}"
                );
                assert!(
                    s.get("title").is_none(),
                    "{name} {which}: no type-name title"
                );
            }
            assert_eq!(
                spec.input_schema.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{name}: unknown arguments must be refused"
            );
            // A tool without arguments (repo.detect_project_type) has no properties.
            let properties = spec.input_schema["properties"].as_object();
            for (field, p) in properties.into_iter().flatten() {
                assert!(
                    p["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{name}: argument {field} has no description"
                );
            }
        }
    }

    #[test]
    fn every_path_field_is_a_workspace_path_of_the_input_schema() {
        for spec in Catalog::builtin().specs() {
            for field in &spec.policy.path_fields {
                let mut s = &spec.input_schema;
                for part in field.field.split('.') {
                    s = &s["properties"][part];
                }
                if field.multi {
                    s = &s["items"];
                }
                // An optional path with no default (`Option<WorkspacePath>`) may be null.
                assert!(
                    s["type"] == "string" || s["type"] == serde_json::json!(["string", "null"]),
                    "{}: {}: {}",
                    spec.name,
                    field.field,
                    s["type"]
                );
                let access = if field.writes { "write" } else { "read" };
                assert_eq!(s["x-workspace-path"], access, "{}", spec.name);
            }
        }
    }

    #[test]
    fn every_example_parses_as_the_tools_arguments_and_fits_its_schema() {
        for tool in Catalog::builtin().iter() {
            let spec = tool.spec();
            assert!(!spec.examples.is_empty(), "{}: no example", spec.name);
            let schema = validator(&spec.input_schema);
            for example in &spec.examples {
                tool.check(example)
                    .unwrap_or_else(|e| panic!("{}: example {example}: {e}", spec.name));
                assert!(schema.is_valid(example), "{}: {example}", spec.name);
            }
        }
    }

    #[test]
    fn a_registry_keeps_the_first_of_two_tools_with_one_name() {
        let mut registry = Registry::default();
        fs::register(&mut registry);
        git::register(&mut registry);
        artifact::register(&mut registry);
        workspace::register(&mut registry);
        let first = registry.tools[0].clone();
        fs::register(&mut registry);
        git::register(&mut registry);
        artifact::register(&mut registry);
        workspace::register(&mut registry);
        let catalog = registry.build();
        assert_eq!(catalog.len(), 31);
        let name = first.spec().name;
        assert!(
            Arc::ptr_eq(catalog.get(name).unwrap(), &first),
            "the first registration of {name} wins"
        );
    }
}
