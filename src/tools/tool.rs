//! The [`Tool`] trait (typed arguments, typed output, metadata, `run`) and its type-erased
//! form, [`ErasedTool`], through which the catalog, the API and the executor use every tool.
//!
//! A tool is written once, with types: its `Args` (serde + schemars, unknown fields refused)
//! and `Output`. Everything the service needs besides `run` is derived from those types when
//! the tool is registered ([`erase`]): the catalog's input and output schemas (schemars), the
//! policy's path fields (from the [`WorkspacePath`](super::args::WorkspacePath) values in the
//! schema), the parsing of arguments with errors naming the field, and the encoding of the
//! output. Nothing here knows a tool family.

use std::future::Future;
use std::sync::Arc;

use schemars::JsonSchema;
use schemars::generate::{Contract, SchemaSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use workspace_events::{LogLine, RawJson};

use super::args::{self, Access, ArgsError, PathArg};
use super::{
    ArgField, Constraints, Idempotency, NewArtifact, Observability, PathField, PolicyMetadata,
    RiskLevel, Scope, SideEffects, ToolContext, ToolFailure, ToolFuture, ToolSpec, ToolSuccess,
    stdout_line,
};
use crate::error_code::ErrorCode;

/// The trace name of every tool span.
pub const TRACE_NAME: &str = "workspace.tools";

/// A tool's metadata: what the catalog serves besides the schemas (which come from the types).
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Catalog name (`fs.read_file`); also the span name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Scope.
    pub scope: Scope,
    /// Side effects.
    pub side_effects: SideEffects,
    /// Risk.
    pub risk_level: RiskLevel,
    /// Whether `"approved": true` is required.
    pub requires_approval: bool,
    /// Idempotency.
    pub idempotency: Idempotency,
    /// Whether the tool runs code the repository chose, by design (a build or test tool runs
    /// the repository's scripts).
    pub runs_repository_code: bool,
    /// Limits.
    pub constraints: Constraints,
    /// Preconditions, informational.
    pub preconditions: Vec<&'static str>,
    /// Postconditions, informational.
    pub postconditions: Vec<&'static str>,
    /// `low`, `medium` or `high`.
    pub cost_hint: &'static str,
    /// String arguments with rules (policy rule 5).
    pub arg_fields: Vec<ArgField>,
    /// Example argument objects (a unit test parses each one as the tool's `Args`).
    pub examples: Vec<Value>,
}

/// What a tool's successful run returns: its typed output plus logs, artifacts and exit code.
#[derive(Debug, Clone)]
pub struct Completed<O> {
    /// The output.
    pub output: O,
    /// Log lines.
    pub logs: Vec<LogLine>,
    /// Artifacts to store.
    pub artifacts: Vec<NewArtifact>,
    /// 0 for in-process work, the process's exit code for commands.
    pub exit_code: i32,
}

impl<O> Completed<O> {
    /// An in-process success with its one-line summary as the only log line.
    pub fn new(output: O, summary: impl Into<String>) -> Self {
        Self {
            output,
            logs: vec![stdout_line(summary)],
            artifacts: Vec::new(),
            exit_code: 0,
        }
    }
}

/// A catalogued tool, written with types. Adding a tool is one file implementing this trait
/// and one registration line in its family (see `tools::fs`).
pub trait Tool: Send + Sync + 'static {
    /// The arguments. Derive `Deserialize` with `#[serde(deny_unknown_fields)]`, `Serialize`
    /// (the policy reads the paths through it) and `JsonSchema` (the catalog's input schema;
    /// doc comments become descriptions). Path arguments are
    /// [`WorkspacePath`](super::args::WorkspacePath)s.
    type Args: DeserializeOwned + Serialize + JsonSchema + Send + 'static;
    /// The output (`Serialize` + `JsonSchema`: the catalog's output schema).
    type Output: Serialize + JsonSchema + Send + 'static;

    /// The tool's metadata.
    fn metadata(&self) -> Metadata;

    /// Runs the tool: the arguments were parsed and allowed by policy.
    fn run(
        &self,
        ctx: &ToolContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Completed<Self::Output>, ToolFailure>> + Send;
}

/// A tool with its types erased: what the catalog holds.
pub trait ErasedTool: Send + Sync {
    /// The catalog entry (metadata, derived schemas and path fields).
    fn spec(&self) -> &ToolSpec;

    /// Parses `args` (`invalid_argument` when they do not parse) and returns the workspace
    /// paths they name, for the policy.
    fn check(&self, args: &Value) -> Result<Vec<PathArg>, ArgsError>;

    /// Parses `args`, runs the tool and encodes its output.
    fn run(&self, ctx: ToolContext, args: Value) -> ToolFuture;
}

/// Registers a typed tool: derives its catalog entry and erases its types.
pub fn erase<T: Tool>(tool: T) -> Arc<dyn ErasedTool> {
    let spec = spec_of(&tool);
    Arc::new(Registered {
        tool: Arc::new(tool),
        spec,
    })
}

struct Registered<T> {
    tool: Arc<T>,
    spec: ToolSpec,
}

impl<T: Tool> ErasedTool for Registered<T> {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn check(&self, args: &Value) -> Result<Vec<PathArg>, ArgsError> {
        let parsed: T::Args = args::parse(args)?;
        Ok(args::workspace_paths(&parsed))
    }

    fn run(&self, ctx: ToolContext, args: Value) -> ToolFuture {
        let tool = Arc::clone(&self.tool);
        Box::pin(async move {
            // Arguments were parsed when the invocation was accepted; a stored argument object
            // that no longer parses (a tool changed its arguments since) is refused the same way.
            let args: T::Args = args::parse_owned(args)
                .map_err(|e| ToolFailure::new(ErrorCode::InvalidArgument, e.to_string()))?;
            let done = tool.run(&ctx, args).await?;
            let output = RawJson::encode(&done.output).map_err(|e| {
                ToolFailure::new(ErrorCode::Internal, format!("encoding the output: {e}"))
            })?;
            Ok(ToolSuccess {
                output,
                logs: done.logs,
                artifacts: done.artifacts,
                exit_code: done.exit_code,
            })
        })
    }
}

/// The JSON Schema (2020-12, every subschema inlined, no `$schema` or root `title`) of `T`
/// as it is deserialised (`Contract::Deserialize`, arguments) or serialised (outputs).
pub fn schema_of<T: JsonSchema>(contract: Contract) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    settings.contract = contract;
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Some(root) = value.as_object_mut() {
        root.remove("title");
    }
    value
}

fn spec_of<T: Tool>(tool: &T) -> ToolSpec {
    let m = tool.metadata();
    let input_schema = schema_of::<T::Args>(Contract::Deserialize);
    let output_schema = schema_of::<T::Output>(Contract::Serialize);
    let mut path_fields = Vec::new();
    collect_path_fields(&input_schema, "", false, &mut path_fields);
    ToolSpec {
        name: m.name,
        description: m.description,
        input_schema,
        output_schema,
        scope: m.scope,
        side_effects: m.side_effects,
        risk_level: m.risk_level,
        requires_approval: m.requires_approval,
        idempotency: m.idempotency,
        runs_repository_code: m.runs_repository_code,
        constraints: m.constraints,
        preconditions: m.preconditions,
        postconditions: m.postconditions,
        cost_hint: m.cost_hint,
        policy: PolicyMetadata {
            path_fields,
            arg_fields: m.arg_fields,
        },
        observability: Observability {
            trace_name: TRACE_NAME,
            span_name: m.name,
        },
        examples: m.examples,
    }
}

/// The catalog's `policy.path_fields`, read from the `x-workspace-path` keyword of the input
/// schema: object members are followed with dots, array items make the field `multi`, and
/// `anyOf`/`oneOf`/`allOf` branches (an optional nested object) are followed too.
fn collect_path_fields(schema: &Value, at: &str, multi: bool, out: &mut Vec<PathField>) {
    if let Some(access) = schema.get("x-workspace-path").and_then(Value::as_str) {
        if !out.iter().any(|f| f.field == at) {
            out.push(PathField {
                field: at.to_owned(),
                multi,
                workspace_relative: true,
                writes: access == args::Write::KEYWORD,
            });
        }
        return;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let field = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            collect_path_fields(sub, &field, multi, out);
        }
    }
    if let Some(items) = schema.get("items") {
        collect_path_fields(items, at, true, out);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_path_fields(branch, at, multi, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;
    use workspace_events::Principal;

    use super::*;
    use crate::ids::SessionId;
    use crate::runner::protocol::{Reply, Request};
    use crate::runner::{RunnerError, SessionRunner};
    use crate::tools::SessionContext;
    use crate::tools::args::{Count, WorkspacePath, Write};
    use crate::tools::catalog::Registry;

    /// A tool as a new family would write it: paths at depth, a count, typed output.
    struct Echo;

    #[derive(Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct EchoArgs {
        /// Paths to echo.
        paths: Vec<WorkspacePath>,
        /// A nested request.
        #[serde(default)]
        request: Option<Target>,
        /// How many times.
        #[serde(default)]
        times: Count<3, 5>,
    }

    #[derive(Deserialize, Serialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Target {
        /// Where it would write.
        target: WorkspacePath<Write>,
    }

    #[derive(Serialize, JsonSchema)]
    struct EchoOutput {
        /// The paths, as given.
        paths: Vec<String>,
        /// The capped count.
        times: u64,
    }

    impl Tool for Echo {
        type Args = EchoArgs;
        type Output = EchoOutput;

        fn metadata(&self) -> Metadata {
            Metadata {
                name: "test.echo",
                description: "Echo the paths.",
                scope: Scope::Workspace,
                side_effects: SideEffects::None,
                risk_level: RiskLevel::Low,
                requires_approval: false,
                idempotency: Idempotency::Guaranteed,
                runs_repository_code: false,
                constraints: Constraints {
                    timeout_seconds: 5,
                    max_retries: 0,
                    output_limit_kb: None,
                },
                preconditions: Vec::new(),
                postconditions: Vec::new(),
                cost_hint: "low",
                arg_fields: Vec::new(),
                examples: vec![json!({"paths": ["a"]})],
            }
        }

        async fn run(
            &self,
            _: &ToolContext,
            args: EchoArgs,
        ) -> Result<Completed<EchoOutput>, ToolFailure> {
            Ok(Completed::new(
                EchoOutput {
                    paths: args.paths.iter().map(|p| p.as_str().to_owned()).collect(),
                    times: args.times.get(),
                },
                "echoed",
            ))
        }
    }

    /// The runner of a tool that never calls it.
    struct NoRunner;

    #[async_trait::async_trait]
    impl SessionRunner for NoRunner {
        async fn call(&self, _: Request, _: Duration) -> Result<Reply, RunnerError> {
            Err(RunnerError::Timeout)
        }

        fn isolation(&self) -> &'static str {
            "none"
        }
    }

    fn context() -> ToolContext {
        ToolContext {
            session: Arc::new(SessionContext {
                id: SessionId::generate(),
                principal: Principal {
                    tenant_id: "t".into(),
                    actor_id: "a".into(),
                    roles: Vec::new(),
                },
                allowed_paths: vec![".".into()],
                metadata: BTreeMap::new(),
                runtime: None,
            }),
            runner: Arc::new(NoRunner),
            deadline: Instant::now() + Duration::from_secs(5),
            output: crate::live::OutputSink::discard(),
            kube: None,
        }
    }

    fn echo() -> Arc<dyn ErasedTool> {
        let mut registry = Registry::default();
        registry.register(Echo);
        registry
            .build()
            .get("test.echo")
            .expect("registered")
            .clone()
    }

    #[test]
    fn registering_a_tool_derives_its_schemas_and_path_fields() {
        let tool = echo();
        let spec = tool.spec();
        assert_eq!(spec.observability.span_name, "test.echo");
        assert_eq!(spec.observability.trace_name, TRACE_NAME);
        let fields: Vec<(&str, bool, bool)> = spec
            .policy
            .path_fields
            .iter()
            .map(|f| (f.field.as_str(), f.multi, f.writes))
            .collect();
        assert_eq!(
            fields,
            [("paths", true, false), ("request.target", false, true)]
        );
        assert_eq!(spec.input_schema["additionalProperties"], false);
        assert_eq!(spec.input_schema["required"], json!(["paths"]));
        assert_eq!(spec.input_schema["properties"]["times"]["default"], 3);
        assert_eq!(
            spec.input_schema["properties"]["paths"]["description"],
            "Paths to echo."
        );
        assert_eq!(
            spec.output_schema["required"],
            json!(["paths", "times"]),
            "{}",
            spec.output_schema
        );
    }

    #[test]
    fn check_parses_the_arguments_and_returns_their_paths() {
        let tool = echo();
        let paths = tool
            .check(&json!({"paths": ["a", "b"], "request": {"target": "c"}}))
            .unwrap();
        let found: Vec<(&str, bool)> = paths.iter().map(|p| (p.raw.as_str(), p.writes)).collect();
        assert_eq!(found, [("a", false), ("b", false), ("c", true)]);
        assert_eq!(
            tool.check(&json!({"paths": ["a"], "extra": 1}))
                .unwrap_err()
                .to_string(),
            "args: unknown property \"extra\""
        );
        assert_eq!(
            tool.check(&json!({"paths": "a"})).unwrap_err().path,
            "args.paths"
        );
    }

    #[tokio::test]
    async fn run_parses_runs_and_encodes_the_output() {
        let tool = echo();
        let done = tool
            .run(context(), json!({"paths": ["x"], "times": 9}))
            .await
            .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(
            done.output.to_value().unwrap(),
            json!({"paths": ["x"], "times": 5})
        );
        assert_eq!(done.exit_code, 0);
        assert_eq!(done.logs.len(), 1);
        // Stored arguments that no longer parse are refused, never run.
        let refused = tool.run(context(), json!({"times": 1})).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidArgument);
        assert_eq!(refused.message, "args: missing required property \"paths\"");
    }
}
