//! The catalog: every tool the service offers, sorted by name.
//!
//! The catalog is built once at start-up from the tool families' static metadata and never
//! changes while the service runs, so lookups need no locking. It knows nothing about sessions
//! or principals: which tools a caller may see or run is the policy's decision.

use std::fmt;

use super::{Tool, fs};

/// The tools the service offers, sorted by name, names unique.
#[derive(Clone)]
pub struct Catalog {
    tools: Vec<Tool>,
}

impl Catalog {
    /// Every built-in tool (today the `fs.*` family).
    pub fn builtin() -> Self {
        Self::from_tools(fs::tools())
    }

    /// A catalog of `tools`, sorted by name. When two tools share a name the first one listed
    /// wins: the built-in families never do this (a unit test checks it), so the rule only
    /// matters for catalogs assembled by hand in tests.
    pub fn from_tools(mut tools: Vec<Tool>) -> Self {
        // Stable sort keeps the listed order among equal names, so dedup keeps the first.
        tools.sort_by(|a, b| a.spec.name.cmp(b.spec.name));
        tools.dedup_by(|later, earlier| later.spec.name == earlier.spec.name);
        Self { tools }
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools
            .binary_search_by(|t| t.spec.name.cmp(name))
            .ok()
            .map(|i| &self.tools[i])
    }

    /// Every tool, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Tool> + '_ {
        self.tools.iter()
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
            .entries(self.tools.iter().map(|t| t.spec.name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::tools::schema;

    /// Every `properties` key of an object schema, following nested objects with dots, so a
    /// policy field path like `request.path` can be checked.
    fn has_field(schema: &Value, field: &str) -> bool {
        let mut current = schema;
        for part in field.split('.') {
            match current.get("properties").and_then(|p| p.get(part)) {
                Some(next) => current = next,
                None => return false,
            }
        }
        true
    }

    #[test]
    fn builtin_names_are_unique_and_sorted() {
        let catalog = Catalog::builtin();
        let names: Vec<&str> = catalog.iter().map(|t| t.spec.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert_eq!(
            catalog.len(),
            fs::tools().len(),
            "no tool was dropped as a duplicate"
        );
        assert_eq!(catalog.len(), 14);
        assert!(!catalog.is_empty());
    }

    #[test]
    fn get_finds_every_tool_and_nothing_else() {
        let catalog = Catalog::builtin();
        for tool in catalog.iter() {
            assert_eq!(
                catalog.get(tool.spec.name).map(|t| t.spec.name),
                Some(tool.spec.name)
            );
        }
        assert!(catalog.get("fs.nope").is_none());
        assert!(catalog.get("").is_none());
        assert!(catalog.get("FS.LIST").is_none(), "names are case-sensitive");
    }

    #[test]
    fn every_tool_has_complete_metadata() {
        for tool in Catalog::builtin().iter() {
            let spec = &tool.spec;
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
                schema::check_supported(s).unwrap_or_else(|e| panic!("{name} {which} schema: {e}"));
                assert_eq!(
                    s.get("type"),
                    Some(&Value::from("object")),
                    "{name} {which}"
                );
            }
            assert_eq!(
                spec.input_schema.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{name}: unknown arguments must be refused"
            );
        }
    }

    #[test]
    fn every_policy_field_exists_in_the_input_schema() {
        for tool in Catalog::builtin().iter() {
            let spec = &tool.spec;
            for field in &spec.policy.path_fields {
                assert!(
                    has_field(&spec.input_schema, field.field),
                    "{}: {}",
                    spec.name,
                    field.field
                );
                let kind = if field.multi { "array" } else { "string" };
                let mut s = &spec.input_schema;
                for part in field.field.split('.') {
                    s = &s["properties"][part];
                }
                assert_eq!(s["type"], kind, "{}: {}", spec.name, field.field);
            }
            for field in &spec.policy.arg_fields {
                assert!(
                    has_field(&spec.input_schema, field.field),
                    "{}: {}",
                    spec.name,
                    field.field
                );
            }
        }
    }

    #[test]
    fn every_example_is_valid_input() {
        for tool in Catalog::builtin().iter() {
            assert!(
                !tool.spec.examples.is_empty(),
                "{}: no example",
                tool.spec.name
            );
            for example in &tool.spec.examples {
                schema::validate(&tool.spec.input_schema, example)
                    .unwrap_or_else(|e| panic!("{}: example {example}: {e}", tool.spec.name));
            }
        }
    }

    #[test]
    fn a_hand_built_catalog_keeps_the_first_of_two_tools_with_one_name() {
        let mut tools = fs::tools();
        let mut twin = tools[0].clone();
        twin.spec.description = "the twin";
        tools.push(twin);
        let catalog = Catalog::from_tools(tools);
        assert_eq!(catalog.len(), 14);
        let first = fs::tools()[0].spec.name;
        assert_ne!(
            catalog.get(first).map(|t| t.spec.description),
            Some("the twin")
        );
    }
}
